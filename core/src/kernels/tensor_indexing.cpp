// Default-domain indexing operators: Gather, GatherElements, OneHot, NonZero. Index arithmetic is
// flat, over precomputed per-axis offset tables ("axis maps"); every index read is checked.
#include "tensor_ops.hpp"

namespace flock {
namespace tensor_ops {
namespace {

// ---------------------------------------------------------------------------------------------------
// Gather (axis; negative indices count from the end)

class Gather final : public Kernel {
 public:
  explicit Gather(const KernelContext& ctx) : where_(ctx.attrs.where()), axis_(ctx.attrs.get_int("axis", 0)) {
    need_inputs(ctx, 2, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    const Tensor& idx = input(in, 1, where_, "indices");
    if (idx.type != ElemType::Int64)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: indices have element type {}; expected int64 or int32", where_, to_string(idx.type)));
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: data is a scalar; it needs rank >= 1", where_));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, where_));
    const int64_t n = x.shape[axis];
    check_indices(idx.i.data(), idx.i.data() + idx.i.size(), n, where_, static_cast<int64_t>(axis));
    std::vector<int64_t> shape(x.shape.begin(), x.shape.begin() + static_cast<std::ptrdiff_t>(axis));
    shape.insert(shape.end(), idx.shape.begin(), idx.shape.end());
    shape.insert(shape.end(), x.shape.begin() + static_cast<std::ptrdiff_t>(axis) + 1, x.shape.end());
    Tensor y = make_output(x.type, shape, where_);
    const int64_t outer = product(x.shape, 0, axis), inner = product(x.shape, axis + 1, x.shape.size());
    visit2(x, y, [&](const auto& src, auto& dst) {
      auto o = dst.begin();
      for (int64_t r = 0; r < outer; ++r) {
        for (int64_t v : idx.i) {
          const int64_t j = v < 0 ? v + n : v;
          auto from = src.begin() + static_cast<std::ptrdiff_t>((r * n + j) * inner);
          o = std::copy(from, from + static_cast<std::ptrdiff_t>(inner), o);
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// GatherElements: out[i0..i(r-1)] = data[i0.., indices[i0..], ..] with the index replacing `axis`.

class GatherElements final : public Kernel {
 public:
  explicit GatherElements(const KernelContext& ctx)
      : where_(ctx.attrs.where()), axis_(ctx.attrs.get_int("axis", 0)) {
    need_inputs(ctx, 2, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    const Tensor& idx = input(in, 1, where_, "indices");
    if (idx.type != ElemType::Int64)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: indices have element type {}; expected int64 or int32", where_, to_string(idx.type)));
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: data is a scalar; it needs rank >= 1", where_));
    if (idx.shape.size() != x.shape.size())
      fail(ErrorCode::InvalidInput, fmt::format("{}: indices have rank {}, data has rank {}; they must match", where_,
                                                idx.shape.size(), rank));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, where_));
    for (size_t d = 0; d < x.shape.size(); ++d) {
      if (d != axis && idx.shape[d] > x.shape[d])
        fail(ErrorCode::InvalidInput, fmt::format("{}: indices shape {} exceeds data shape {} on axis {}", where_,
                                                  shape_str(idx.shape), shape_str(x.shape), d));
    }
    const int64_t n = x.shape[axis];
    // Every index is checked before any is used (ONNX Runtime's GatherElements does the same).
    check_indices(idx.i.data(), idx.i.data() + idx.i.size(), n, where_, static_cast<int64_t>(axis));
    Tensor y(x.type, idx.shape);
    if (y.numel() == 0) {  // nothing to map (and the axis maps of a shape like [0, 2^40] would be huge)
      set_out(out, 0, std::move(y));
      return;
    }
    const std::vector<int64_t> xs = strides_of(x.shape);
    AxisMaps maps(x.shape.size());
    for (size_t d = 0; d < maps.size(); ++d) {
      maps[d].resize(static_cast<size_t>(std::max<int64_t>(idx.shape[d], 1)));
      for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = d == axis ? 0 : static_cast<int64_t>(i) * xs[d];
    }
    visit2(x, y, [&](const auto& src, auto& dst) {
      for_each_mapped(idx.shape, maps, [&](int64_t k, int64_t off) {
        int64_t j = idx.i[static_cast<size_t>(k)];
        if (j < 0) j += n;
        dst[static_cast<size_t>(k)] = src[static_cast<size_t>(off + j * xs[axis])];
      });
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// OneHot: indices (any numeric type, truncated), depth, values [off, on]; axis inserts the depth axis.
// From opset 11 negative indices count from the end; indices out of range give an all-off row.

class OneHot final : public Kernel {
 public:
  explicit OneHot(const KernelContext& ctx)
      : where_(ctx.attrs.where()), axis_(ctx.attrs.get_int("axis", -1)), negative_(at_least(ctx.opset, 11)) {
    need_inputs(ctx, 3, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& idx = input(in, 0, where_, "indices");
    const Tensor& depth_t = input(in, 1, where_, "depth");
    const Tensor& values = input(in, 2, where_, "values");
    require_numeric(idx, where_, "indices");
    require_numeric(depth_t, where_, "depth");
    if (depth_t.size() != 1 || depth_t.shape.size() > 1)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: depth has shape {}; expected a single value", where_, shape_str(depth_t.shape)));
    if (values.size() != 2 || values.shape.size() != 1)
      fail(ErrorCode::InvalidInput, fmt::format("{}: values has shape {}; expected [2] (off, on)", where_,
                                                shape_str(values.shape)));
    const double dd = depth_t.as_double(0);
    if (!(dd >= 1.0) || dd > static_cast<double>(kMaxOutputElements))
      fail(ErrorCode::InvalidInput, fmt::format("{}: depth {} is not a positive count", where_, dd));
    const int64_t depth = static_cast<int64_t>(dd);
    const int64_t rank = static_cast<int64_t>(idx.shape.size());
    if (axis_ < -rank - 1 || axis_ > rank)
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: axis {} is out of range for an output of rank {}", where_, axis_, rank + 1));
    const size_t axis = static_cast<size_t>(axis_ < 0 ? axis_ + rank + 1 : axis_);
    std::vector<int64_t> shape = idx.shape;
    shape.insert(shape.begin() + static_cast<std::ptrdiff_t>(axis), depth);
    Tensor y = make_output(values.type, shape, where_);
    const int64_t outer = product(idx.shape, 0, axis), inner = product(idx.shape, axis, idx.shape.size());
    visit2(values, y, [&](const auto& v, auto& dst) {
      std::fill(dst.begin(), dst.end(), v[0]);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
          const size_t src = static_cast<size_t>(o * inner + i);
          double jv = idx.type == ElemType::Int64 ? static_cast<double>(idx.i[src]) : std::trunc(idx.as_double(src));
          if (jv < 0 && negative_) jv += static_cast<double>(depth);
          if (!(jv >= 0 && jv < static_cast<double>(depth))) continue;
          dst[static_cast<size_t>((o * depth + static_cast<int64_t>(jv)) * inner + i)] = v[1];
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  int64_t axis_ = -1;
  bool negative_ = true;
};

// ---------------------------------------------------------------------------------------------------
// NonZero: int64 [rank, count] coordinates of the non-zero (non-empty, for strings) elements in
// row-major order. A scalar counts as shape [1].

class NonZero final : public Kernel {
 public:
  explicit NonZero(const KernelContext& ctx) : where_(ctx.attrs.where()) { need_inputs(ctx, 1, where_); }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    const std::vector<int64_t> shape = x.shape.empty() ? std::vector<int64_t>{1} : x.shape;
    visit(x, [&](const auto& src) {
      using T = typename std::decay_t<decltype(src)>::value_type;
      auto nz = [](const T& v) {
        if constexpr (std::is_same_v<T, std::string>) return !v.empty();
        else return v != T{};
      };
      int64_t count = 0;
      for (const T& v : src) count += nz(v) ? 1 : 0;
      const size_t r = shape.size();
      Tensor y(ElemType::Int64, {static_cast<int64_t>(r), count});
      std::vector<int64_t> idx(r, 0);
      int64_t j = 0;
      for (const T& v : src) {
        if (nz(v)) {
          for (size_t d = 0; d < r; ++d) y.i[static_cast<size_t>(static_cast<int64_t>(d) * count + j)] = idx[d];
          ++j;
        }
        for (size_t d = r; d-- > 0;) {
          if (++idx[d] < shape[d]) break;
          idx[d] = 0;
        }
      }
      set_out(out, 0, std::move(y));
    });
  }

 private:
  std::string where_;
};

}  // namespace

void register_indexing_kernels(KernelRegistry& r) {
  add<Gather>(r, "Gather");
  add<GatherElements>(r, "GatherElements");
  add<OneHot>(r, "OneHot");
  add<NonZero>(r, "NonZero");
}

}  // namespace tensor_ops
}  // namespace flock
