// Default-domain Slice and Pad.
#include "tensor_ops.hpp"

namespace flock {
namespace tensor_ops {
namespace {

// ---------------------------------------------------------------------------------------------------
// Slice: attributes starts/ends/axes (opset < 10) or inputs starts, ends, axes, steps (opset >= 10).

class Slice final : public Kernel {
 public:
  explicit Slice(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    legacy_ = !at_least(ctx.opset, 10) || (ctx.opset == 0 && ctx.attrs.has("starts") && ctx.node.input_size() < 3);
    if (legacy_) {
      need_inputs(ctx, 1, where_);
      if (!ctx.attrs.has("starts") || !ctx.attrs.has("ends"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attributes 'starts' and 'ends'", where_));
      starts_ = ctx.attrs.get_ints("starts");
      ends_ = ctx.attrs.get_ints("ends");
      if (starts_.size() != ends_.size())
        fail(ErrorCode::InvalidModel, fmt::format("{}: 'starts' has {} values, 'ends' {}", where_, starts_.size(),
                                                  ends_.size()));
      has_axes_ = ctx.attrs.has("axes");
      if (has_axes_) {
        axes_ = ctx.attrs.get_ints("axes");
        if (axes_.size() != starts_.size())
          fail(ErrorCode::InvalidModel, fmt::format("{}: 'axes' has {} values, 'starts' {}", where_, axes_.size(),
                                                    starts_.size()));
        check_unique_attr(axes_, where_, "axes");
      }
    } else {
      if (ctx.attrs.has("starts") || ctx.attrs.has("ends") || ctx.attrs.has("axes"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attributes starts/ends/axes became inputs in opset 10", where_));
      need_inputs(ctx, 3, where_);
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    std::vector<int64_t> starts, ends, axes, steps;
    bool has_axes = has_axes_;
    if (legacy_) {
      starts = starts_;
      ends = ends_;
      axes = axes_;
    } else {
      starts = int_list(input(in, 1, where_, "starts"), where_, "starts");
      ends = int_list(input(in, 2, where_, "ends"), where_, "ends");
      if (const Tensor* a = optional_input(in, 3, where_, "axes")) {
        axes = int_list(*a, where_, "axes");
        has_axes = true;
      }
      const Tensor* st = optional_input(in, 4, where_, "steps");
      if (st) steps = int_list(*st, where_, "steps");
      if (starts.size() != ends.size() || (has_axes && axes.size() != starts.size()) ||
          (st && steps.size() != starts.size()))
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: starts {}, ends {}, axes {} and steps {} must have the same length", where_,
                         shape_str(starts), shape_str(ends), shape_str(axes), shape_str(steps)));
    }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (!has_axes) {
      if (static_cast<int64_t>(starts.size()) > rank)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: {} starts for an input of rank {}", where_, starts.size(), rank));
      axes.resize(starts.size());
      std::iota(axes.begin(), axes.end(), int64_t(0));
    }
    axes = normalize_axes(axes, rank, where_);
    if (steps.empty()) steps.assign(starts.size(), 1);

    std::vector<int64_t> first(x.shape.size(), 0), step(x.shape.size(), 1), shape = x.shape;
    for (size_t k = 0; k < axes.size(); ++k) {
      const size_t a = static_cast<size_t>(axes[k]);
      const int64_t dim = x.shape[a], st = steps[k];
      if (st == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: step for axis {} is 0", where_, a));
      int64_t s = starts[k], e = ends[k];
      if (s < 0) s += dim;
      if (e < 0) e += dim;
      // Clamped per the spec; then len = ceil((e - s) / step), at least 0 (128-bit: |step| may be huge).
      int64_t len = 0;
      if (st > 0) {
        s = std::clamp<int64_t>(s, 0, dim);
        e = std::clamp<int64_t>(e, 0, dim);
        if (e > s) len = static_cast<int64_t>((static_cast<__int128>(e) - s - 1) / st + 1);
      } else if (dim > 0) {
        s = std::clamp<int64_t>(s, 0, dim - 1);
        e = std::clamp<int64_t>(e, -1, dim - 1);
        if (s > e) len = static_cast<int64_t>((static_cast<__int128>(s) - e - 1) / -static_cast<__int128>(st) + 1);
      }
      first[a] = s;
      step[a] = st;
      shape[a] = len;
    }
    Tensor y(x.type, shape);
    if (y.numel() > 0) {
      const std::vector<int64_t> xs = strides_of(x.shape);
      AxisMaps maps(shape.size());
      for (size_t d = 0; d < shape.size(); ++d) {
        maps[d].resize(static_cast<size_t>(std::max<int64_t>(shape[d], 1)));
        for (size_t i = 0; i < maps[d].size(); ++i)
          maps[d][i] = (first[d] + static_cast<int64_t>(i) * step[d]) * xs[d];
      }
      gather_mapped(x, y, maps);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool legacy_ = false;
  bool has_axes_ = false;
  std::vector<int64_t> starts_, ends_, axes_;
};

// ---------------------------------------------------------------------------------------------------
// Pad: pads attribute and float `value` (opset < 11) or pads / constant_value / axes inputs (opset
// >= 11; axes from 18). Modes constant, reflect, edge; negative pads crop.

class Pad final : public Kernel {
 public:
  explicit Pad(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.opset > 0 && ctx.opset < 2)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: opset {} (attribute 'paddings') is not supported; opset 2 or later is", where_, ctx.opset));
    need_inputs(ctx, 1, where_);
    const std::string mode = ctx.attrs.get_string("mode", "constant");
    if (mode == "constant") mode_ = Mode::Constant;
    else if (mode == "reflect") mode_ = Mode::Reflect;
    else if (mode == "edge") mode_ = Mode::Edge;
    else if (mode == "wrap")
      fail(ErrorCode::UnsupportedOperator, fmt::format("{}: mode 'wrap' is not supported", where_));
    else
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: mode '{}' is not one of 'constant', 'reflect', 'edge'", where_, mode));
    legacy_ = !at_least(ctx.opset, 11) || (ctx.opset == 0 && ctx.attrs.has("pads") && !has_input(ctx, 1));
    if (legacy_) {
      if (!ctx.attrs.has("pads")) fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'pads'", where_));
      pads_ = ctx.attrs.get_ints("pads");
      if (pads_.size() % 2 != 0)
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'pads' has an odd number of values ({})", where_,
                                                  pads_.size()));
      value_ = ctx.attrs.get_float("value", 0.0f);
    } else {
      if (ctx.attrs.has("pads") || ctx.attrs.has("value"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: attributes 'pads' and 'value' became inputs in opset 11", where_));
      need_inputs(ctx, 2, where_);
      if (has_input(ctx, 3) && !at_least(ctx.opset, 18))
        fail(ErrorCode::InvalidModel, fmt::format("{}: the 'axes' input needs opset 18", where_));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::vector<int64_t> pads = legacy_ ? pads_ : int_list(input(in, 1, where_, "pads"), where_, "pads");
    std::vector<int64_t> axes;
    const Tensor* axes_in = legacy_ ? nullptr : optional_input(in, 3, where_, "axes");
    if (axes_in) {
      axes = normalize_axes(int_list(*axes_in, where_, "axes"), rank, where_);
    } else {
      axes.resize(static_cast<size_t>(rank));
      std::iota(axes.begin(), axes.end(), int64_t(0));
    }
    if (pads.size() != 2 * axes.size())
      fail(ErrorCode::InvalidInput, fmt::format("{}: pads {} has {} values; an input of rank {} needs {}", where_,
                                                shape_str(pads), pads.size(), rank, 2 * axes.size()));
    std::vector<int64_t> begin(x.shape.size(), 0), end(x.shape.size(), 0);
    for (size_t k = 0; k < axes.size(); ++k) {
      begin[static_cast<size_t>(axes[k])] = pads[k];
      end[static_cast<size_t>(axes[k])] = pads[k + axes.size()];
    }

    // The constant: the value attribute, the constant_value input, or zero.
    Tensor fill(x.type, {1});
    const Tensor* cv = legacy_ ? nullptr : optional_input(in, 2, where_, "constant_value");
    if (cv) {
      if (cv->type != x.type)
        fail(ErrorCode::InvalidModel, fmt::format("{}: constant_value has element type {}; data has {}", where_,
                                                  to_string(cv->type), to_string(x.type)));
      if (cv->size() != 1)
        fail(ErrorCode::InvalidInput, fmt::format("{}: constant_value holds {} values; expected one", where_,
                                                  cv->size()));
      fill = *cv;
    } else if (legacy_) {
      switch (x.type) {
        case ElemType::Float: fill.f[0] = value_; break;
        case ElemType::Double: fill.d[0] = value_; break;
        case ElemType::Int64: fill.i[0] = to_int64(value_); break;
        case ElemType::Bool: fill.b[0] = value_ != 0.0f; break;
        case ElemType::String: break;
      }
    }

    std::vector<int64_t> shape(x.shape.size());
    const std::vector<int64_t> xs = strides_of(x.shape);
    AxisMaps maps(x.shape.size());
    for (size_t d = 0; d < x.shape.size(); ++d) {
      const int64_t n = x.shape[d];
      shape[d] = checked_add(checked_add(n, begin[d], where_), end[d], fmt::format("{}: padded size of axis {}", where_, d));
      if (shape[d] < 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: pads {} crop axis {} of size {} below zero", where_,
                                                  shape_str(pads), d, n));
      if (mode_ != Mode::Constant && n == 0 && shape[d] > 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: cannot pad the empty axis {} in {} mode", where_, d,
                                                  mode_ == Mode::Edge ? "edge" : "reflect"));
    }
    const bool empty = checked_output_numel(shape, where_) == 0;
    for (size_t d = 0; d < x.shape.size() && !empty; ++d) {
      const int64_t n = x.shape[d];
      maps[d].resize(static_cast<size_t>(std::max<int64_t>(shape[d], 1)));
      for (size_t i = 0; i < maps[d].size(); ++i) {
        int64_t c = static_cast<int64_t>(i) - begin[d];
        if (c < 0 || c >= n) {
          if (mode_ == Mode::Constant || n == 0) {
            maps[d][i] = -1;
            continue;
          }
          if (mode_ == Mode::Edge) {
            c = std::clamp<int64_t>(c, 0, n - 1);
          } else if (n == 1) {
            c = 0;
          } else {
            const int64_t period = 2 * (n - 1);
            c %= period;
            if (c < 0) c += period;
            if (c >= n) c = period - c;
          }
        }
        maps[d][i] = c * xs[d];
      }
    }
    Tensor y(x.type, shape);
    gather_mapped(x, y, maps, &fill);
    set_out(out, 0, std::move(y));
  }

 private:
  enum class Mode { Constant, Reflect, Edge };
  std::string where_;
  Mode mode_ = Mode::Constant;
  bool legacy_ = false;
  std::vector<int64_t> pads_;
  float value_ = 0.0f;
};

}  // namespace

void register_slice_pad_kernels(KernelRegistry& r) {
  add<Slice>(r, "Slice");
  add<Pad>(r, "Pad");
}

}  // namespace tensor_ops
}  // namespace flock
