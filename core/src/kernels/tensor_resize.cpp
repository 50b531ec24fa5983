// Default-domain Resize.
#include "tensor_ops.hpp"

namespace flock {
namespace tensor_ops {
namespace {

// ---------------------------------------------------------------------------------------------------
// Resize (opset 11 and later): modes nearest (4 rounding modes), linear, cubic (cubic_coeff_a,
// exclude_outside); coordinate transformations half_pixel, pytorch_half_pixel, align_corners,
// asymmetric, tf_half_pixel_for_nn, tf_crop_and_resize (roi, extrapolation_value). Output sizes from
// `scales` (floor(scale * size)) or `sizes`. Separable: one pass per axis, innermost first, as the
// ONNX reference interpolates; each output index reads at most four taps (edge-clamped).

class Resize final : public Kernel {
 public:
  explicit Resize(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.opset > 0 && ctx.opset < 11)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: Resize opset {} (Upsample-style coordinates) is not supported; opset 11 or later is",
                       where_, ctx.opset));
    need_inputs(ctx, 1, where_);
    const Attrs& a = ctx.attrs;
    const std::string mode = a.get_string("mode", "nearest");
    if (mode == "nearest") mode_ = Mode::Nearest;
    else if (mode == "linear") mode_ = Mode::Linear;
    else if (mode == "cubic") mode_ = Mode::Cubic;
    else fail(ErrorCode::InvalidModel, fmt::format("{}: mode '{}' is not one of nearest, linear, cubic", where_, mode));
    const std::string ct = a.get_string("coordinate_transformation_mode", "half_pixel");
    if (ct == "half_pixel") coord_ = Coord::HalfPixel;
    else if (ct == "pytorch_half_pixel") coord_ = Coord::PytorchHalfPixel;
    else if (ct == "align_corners") coord_ = Coord::AlignCorners;
    else if (ct == "asymmetric") coord_ = Coord::Asymmetric;
    else if (ct == "tf_half_pixel_for_nn") coord_ = Coord::TfHalfPixelForNN;
    else if (ct == "tf_crop_and_resize") coord_ = Coord::TfCropAndResize;
    else if (ct == "half_pixel_symmetric")
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: coordinate_transformation_mode 'half_pixel_symmetric' is not supported", where_));
    else
      fail(ErrorCode::InvalidModel, fmt::format("{}: unknown coordinate_transformation_mode '{}'", where_, ct));
    const std::string nm = a.get_string("nearest_mode", "round_prefer_floor");
    if (nm == "round_prefer_floor") nearest_ = Near::RoundPreferFloor;
    else if (nm == "round_prefer_ceil") nearest_ = Near::RoundPreferCeil;
    else if (nm == "floor") nearest_ = Near::Floor;
    else if (nm == "ceil") nearest_ = Near::Ceil;
    else fail(ErrorCode::InvalidModel, fmt::format("{}: unknown nearest_mode '{}'", where_, nm));
    cubic_a_ = a.get_float("cubic_coeff_a", -0.75f);
    exclude_outside_ = a.get_int("exclude_outside", 0) != 0;
    extrapolation_ = a.get_float("extrapolation_value", 0.0f);
    if (a.get_int("antialias", 0) != 0)
      fail(ErrorCode::UnsupportedOperator, fmt::format("{}: antialias is not supported", where_));
    if (a.has("axes")) fail(ErrorCode::UnsupportedOperator, fmt::format("{}: attribute 'axes' is not supported", where_));
    if (a.get_string("keep_aspect_ratio_policy", "stretch") != "stretch")
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: keep_aspect_ratio_policy other than 'stretch' is not supported", where_));
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    if (mode_ != Mode::Nearest && x.type != ElemType::Float && x.type != ElemType::Double)
      fail(ErrorCode::UnsupportedOperator, fmt::format("{}: {} mode needs float or double input, got {}", where_,
                                                mode_ == Mode::Linear ? "linear" : "cubic", to_string(x.type)));
    const size_t rank = x.shape.size();
    const Tensor* roi = optional_input(in, 1, where_, "roi");
    const Tensor* scales = optional_input(in, 2, where_, "scales");
    const Tensor* sizes = optional_input(in, 3, where_, "sizes");
    const bool has_scales = scales && scales->numel() > 0, has_sizes = sizes && sizes->numel() > 0;
    if (has_scales == has_sizes)
      fail(ErrorCode::InvalidInput, fmt::format("{}: exactly one of 'scales' and 'sizes' must be given", where_));
    std::vector<double> scale(rank), width(rank);  // per axis: scale, and output width as the reference has it
    std::vector<int64_t> shape(rank);
    if (has_scales) {
      if (scales->type != ElemType::Float && scales->type != ElemType::Double)
        fail(ErrorCode::UnsupportedOperator,
             fmt::format("{}: scales have element type {}; expected float", where_, to_string(scales->type)));
      if (scales->size() != rank)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: scales hold {} values for an input of rank {}", where_, scales->size(), rank));
      for (size_t d = 0; d < rank; ++d) {
        const double s = scales->as_double(d);
        if (!(s > 0) || !std::isfinite(s))
          fail(ErrorCode::InvalidInput, fmt::format("{}: scale {} for axis {} is not positive", where_, s, d));
        scale[d] = s;
        const double w = s * static_cast<double>(x.shape[d]);
        if (w > static_cast<double>(kMaxOutputElements))
          fail(ErrorCode::LimitExceeded, fmt::format("{}: scale {} makes axis {} too large", where_, s, d));
        shape[d] = static_cast<int64_t>(w);
        // The reference multiplies a float scale by the size in float.
        width[d] = scales->type == ElemType::Float ? static_cast<double>(scales->f[d] * static_cast<float>(x.shape[d]))
                                                   : w;
      }
    } else {
      const std::vector<int64_t>& sz = int_list(*sizes, where_, "sizes");
      if (sz.size() != rank)
        fail(ErrorCode::InvalidInput, fmt::format("{}: sizes {} has {} values for an input of rank {}", where_,
                                                  shape_str(sz), sz.size(), rank));
      for (size_t d = 0; d < rank; ++d) {
        if (sz[d] < 0) fail(ErrorCode::InvalidInput, fmt::format("{}: sizes {} has a negative size", where_, shape_str(sz)));
        if (x.shape[d] == 0 && sz[d] > 0)
          fail(ErrorCode::InvalidInput, fmt::format("{}: cannot resize the empty axis {} to {}", where_, d, sz[d]));
        shape[d] = sz[d];
        scale[d] = x.shape[d] == 0 ? 1.0 : static_cast<double>(sz[d]) / static_cast<double>(x.shape[d]);
        width[d] = scale[d] * static_cast<double>(x.shape[d]);
      }
    }
    checked_output_numel(shape, where_);
    std::vector<double> roi_start(rank, 0.0), roi_len(rank, 1.0);
    if (coord_ == Coord::TfCropAndResize) {
      if (roi && roi->type != ElemType::Float && roi->type != ElemType::Double)
        fail(ErrorCode::UnsupportedOperator,
             fmt::format("{}: roi has element type {}; expected float", where_, to_string(roi->type)));
      if (!roi || roi->size() != 2 * rank)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: tf_crop_and_resize needs roi with {} values, got {}", where_, 2 * rank,
                         roi ? roi->size() : 0));
      for (size_t d = 0; d < rank; ++d) {
        roi_start[d] = roi->as_double(d);
        roi_len[d] = roi->type == ElemType::Float ? static_cast<double>(roi->f[d + rank] - roi->f[d])
                                                  : roi->d[d + rank] - roi->d[d];
      }
    }
    for (size_t d = 0; d < rank; ++d)
      if (x.shape[d] == 0 && shape[d] > 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: cannot resize the empty axis {} to {}", where_, d, shape[d]));
    if (checked_output_numel(shape, where_) == 0) {  // the per-axis taps of [0, 2^31] would still be huge
      set_out(out, 0, Tensor(x.type, shape));
      return;
    }

    // One pass per axis that changes, innermost first.
    Tensor cur_t;             // non-float path
    std::vector<double> cur;  // float path
    const bool real = x.type == ElemType::Float || x.type == ElemType::Double;
    std::vector<int64_t> cur_shape = x.shape;
    bool started = false;
    Taps taps;
    for (size_t d = rank; d-- > 0;) {
      if (!plan_axis(x.shape[d], shape[d], scale[d], width[d], roi_start[d], roi_len[d], taps)) continue;
      const int64_t outer = product(cur_shape, 0, d), inner = product(cur_shape, d + 1, rank);
      const int64_t n_in = cur_shape[d], n_out = shape[d];
      std::vector<int64_t> next_shape = cur_shape;
      next_shape[d] = n_out;
      checked_output_numel(next_shape, where_);  // a pass may be larger than both input and output
      if (real) {
        if (!started) {
          cur.resize(x.size());
          for (size_t k = 0; k < cur.size(); ++k) cur[k] = x.type == ElemType::Float ? x.f[k] : x.d[k];
        }
        std::vector<double> next(static_cast<size_t>(outer * n_out * inner));
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t j = 0; j < n_out; ++j) {
            const size_t t0 = static_cast<size_t>(j) * 4, cnt = taps.count[static_cast<size_t>(j)];
            double* dst = &next[static_cast<size_t>((o * n_out + j) * inner)];
            if (cnt == 0) {
              std::fill(dst, dst + inner, extrapolation_);
              continue;
            }
            for (int64_t i = 0; i < inner; ++i) {
              double v = 0.0;
              for (size_t t = 0; t < cnt; ++t)
                v += taps.w[t0 + t] * cur[static_cast<size_t>((o * n_in + taps.src[t0 + t]) * inner + i)];
              dst[i] = v;
            }
          }
        }
        cur = std::move(next);
      } else {
        const Tensor& src_t = started ? cur_t : x;
        Tensor next(x.type, next_shape);
        visit2(src_t, next, [&](const auto& src, auto& dst) {
          using T = typename std::decay_t<decltype(dst)>::value_type;
          T fill{};
          if constexpr (std::is_same_v<T, int64_t>) fill = to_int64(extrapolation_);
          else if constexpr (std::is_same_v<T, uint8_t>) fill = extrapolation_ != 0.0;
          for (int64_t o = 0; o < outer; ++o)
            for (int64_t j = 0; j < n_out; ++j) {
              const size_t cnt = taps.count[static_cast<size_t>(j)];
              const int64_t s = taps.src[static_cast<size_t>(j) * 4];
              for (int64_t i = 0; i < inner; ++i)
                dst[static_cast<size_t>((o * n_out + j) * inner + i)] =
                    cnt ? src[static_cast<size_t>((o * n_in + s) * inner + i)] : fill;
            }
        });
        cur_t = std::move(next);
      }
      cur_shape = std::move(next_shape);
      started = true;
    }
    if (!started) {
      set_out(out, 0, x);
      return;
    }
    if (!real) {
      set_out(out, 0, std::move(cur_t));
      return;
    }
    Tensor y(x.type, cur_shape);
    for (size_t k = 0; k < cur.size(); ++k) {
      if (x.type == ElemType::Float) y.f[k] = static_cast<float>(cur[k]);
      else y.d[k] = cur[k];
    }
    set_out(out, 0, std::move(y));
  }

 private:
  enum class Mode { Nearest, Linear, Cubic };
  enum class Coord { HalfPixel, PytorchHalfPixel, AlignCorners, Asymmetric, TfHalfPixelForNN, TfCropAndResize };
  enum class Near { RoundPreferFloor, RoundPreferCeil, Floor, Ceil };

  // Per output index j: count[j] taps (0: the extrapolation value) at src[4j..], weights w[4j..].
  struct Taps {
    std::vector<int64_t> src;
    std::vector<double> w;
    std::vector<size_t> count;
  };

  // Fills `taps` for one axis; false when the axis maps every output index to the same input index.
  bool plan_axis(int64_t n_in, int64_t n_out, double scale, double width, double roi_start, double roi_len,
                 Taps& taps) const {
    taps.src.assign(static_cast<size_t>(n_out) * 4, 0);
    taps.w.assign(static_cast<size_t>(n_out) * 4, 0.0);
    taps.count.assign(static_cast<size_t>(n_out), 0);
    bool identity = n_in == n_out;
    const double in_w = static_cast<double>(n_in);
    for (int64_t j = 0; j < n_out; ++j) {
      const double xo = static_cast<double>(j);
      double x = 0.0;
      switch (coord_) {
        case Coord::AlignCorners: x = width == 1.0 ? 0.0 : xo * (in_w - 1) / (width - 1); break;
        case Coord::Asymmetric: x = xo / scale; break;
        case Coord::PytorchHalfPixel: x = width == 1.0 ? -0.5 : (xo + 0.5) / scale - 0.5; break;
        case Coord::HalfPixel: x = (xo + 0.5) / scale - 0.5; break;
        case Coord::TfHalfPixelForNN: x = (xo + 0.5) / scale; break;
        case Coord::TfCropAndResize:
          x = width == 1.0 ? roi_len * (in_w - 1) / 2 : xo * roi_len * (in_w - 1) / (width - 1);
          x += roi_start * (in_w - 1);
          break;
      }
      const size_t t0 = static_cast<size_t>(j) * 4;
      if (coord_ == Coord::TfCropAndResize && (x < 0 || x > in_w - 1)) {
        identity = false;
        continue;  // count 0: extrapolation value
      }
      if (!std::isfinite(x)) x = 0.0;
      // Neighbours prefer the lower index: base = ceil(x) - 1, ratio in (0, 1].
      const double fl = std::floor(x);
      const bool whole = x == fl;
      const double ratio = whole ? 1.0 : x - fl;
      const int64_t base = static_cast<int64_t>(fl) - (whole ? 1 : 0);
      double c[4];
      int64_t first = base;
      size_t n = 2;
      switch (mode_) {
        case Mode::Nearest: {
          bool up = true;  // take base + 1
          if (!whole) {
            switch (nearest_) {
              case Near::RoundPreferFloor: up = ratio > 0.5; break;
              case Near::RoundPreferCeil: up = ratio >= 0.5; break;
              case Near::Floor: up = false; break;
              case Near::Ceil: up = true; break;
            }
          }
          c[0] = up ? 0.0 : 1.0;
          c[1] = up ? 1.0 : 0.0;
          break;
        }
        case Mode::Linear:
          c[0] = 1.0 - ratio;
          c[1] = ratio;
          break;
        case Mode::Cubic: {
          const double A = cubic_a_, r = ratio, q = 1.0 - ratio;
          c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
          c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
          c[2] = ((A + 2) * q - (A + 3)) * q * q + 1;
          c[3] = ((A * (q + 1) - 5 * A) * (q + 1) + 8 * A) * (q + 1) - 4 * A;
          first = base - 1;
          n = 4;
          break;
        }
      }
      if (exclude_outside_) {
        double sum = 0.0;
        for (size_t t = 0; t < n; ++t) {
          const int64_t idx = first + static_cast<int64_t>(t);
          if (idx < 0 || idx >= n_in) c[t] = 0.0;
          sum += c[t];
        }
        if (sum != 0.0)
          for (size_t t = 0; t < n; ++t) c[t] /= sum;
      }
      size_t cnt = 0;
      for (size_t t = 0; t < n; ++t) {
        if (c[t] == 0.0) continue;
        taps.src[t0 + cnt] = std::clamp<int64_t>(first + static_cast<int64_t>(t), 0, n_in - 1);
        taps.w[t0 + cnt] = c[t];
        ++cnt;
      }
      if (cnt == 0) {  // every weight excluded: the nearest edge value
        taps.src[t0] = std::clamp<int64_t>(base + 1, 0, n_in - 1);
        taps.w[t0] = mode_ == Mode::Nearest ? 1.0 : std::numeric_limits<double>::quiet_NaN();
        cnt = 1;
      }
      taps.count[static_cast<size_t>(j)] = cnt;
      if (mode_ == Mode::Nearest) taps.w[t0] = 1.0;
      identity = identity && cnt == 1 && taps.src[t0] == j && taps.w[t0] == 1.0;
    }
    return !identity;
  }

  std::string where_;
  Mode mode_ = Mode::Nearest;
  Coord coord_ = Coord::HalfPixel;
  Near nearest_ = Near::RoundPreferFloor;
  double cubic_a_ = -0.75;
  bool exclude_outside_ = false;
  double extrapolation_ = 0.0;
};

}  // namespace

void register_resize_kernels(KernelRegistry& r) {
  add<Resize>(r, "Resize");
}

}  // namespace tensor_ops
}  // namespace flock
