// Default-domain shape operators: Split, Transpose, Squeeze, Unsqueeze, Shape, Size,
// ConstantOfShape, Expand, Tile, Range. (Reshape, Flatten and Concat are in standard.cpp.)
#include "tensor_ops.hpp"

namespace flock {
namespace tensor_ops {
namespace {

// ---------------------------------------------------------------------------------------------------
// Split: sizes from the `split` attribute (opset < 13) or input (opset >= 13), else equal parts (one per
// output), or opset 18's num_outputs (ceil-sized parts, the last one smaller).

class Split final : public Kernel {
 public:
  explicit Split(const KernelContext& ctx) : where_(ctx.attrs.where()), axis_(ctx.attrs.get_int("axis", 0)) {
    if (ctx.opset > 0 && ctx.opset < 2)
      fail(ErrorCode::UnsupportedOperator, fmt::format("{}: opset {} (split as a second input) is not supported; "
                                                       "opset 2 or later is",
                                                       where_, ctx.opset));
    need_inputs(ctx, 1, where_);
    n_out_ = ctx.node.output_size();
    if (n_out_ < 1) fail(ErrorCode::InvalidModel, fmt::format("{}: has no outputs", where_));
    if (ctx.attrs.has("split")) {
      if (ctx.opset >= 13)
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'split' became an input in opset 13", where_));
      split_attr_ = ctx.attrs.get_ints("split");
      has_split_attr_ = true;
      if (static_cast<int64_t>(split_attr_.size()) != n_out_)
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'split' has {} sizes for {} outputs", where_,
                                                  split_attr_.size(), n_out_));
      for (int64_t v : split_attr_)
        if (v < 0)
          fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'split' has a negative size {}", where_, v));
    }
    split_input_ = at_least(ctx.opset, 13) && has_input(ctx, 1);
    if (!at_least(ctx.opset, 13) && has_input(ctx, 1))
      fail(ErrorCode::InvalidModel, fmt::format("{}: the 'split' input needs opset 13", where_));
    if (ctx.attrs.has("num_outputs")) {
      if (!at_least(ctx.opset, 18))
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'num_outputs' needs opset 18", where_));
      num_outputs_ = ctx.attrs.get_int("num_outputs");
      if (num_outputs_ != n_out_)
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: num_outputs is {} but the node has {} outputs", where_, num_outputs_, n_out_));
      if (split_input_)
        fail(ErrorCode::InvalidModel, fmt::format("{}: has both the 'split' input and 'num_outputs'", where_));
    } else if (ctx.opset >= 18 && !split_input_) {
      // Opset 18 requires one of them (equal parts need num_outputs).
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: needs the 'split' input or the 'num_outputs' attribute at opset {}", where_, ctx.opset));
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; it needs rank >= 1", where_));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, where_));
    const int64_t dim = x.shape[axis];
    std::vector<int64_t> sizes;
    const Tensor* split = split_input_ ? optional_input(in, 1, where_, "split") : nullptr;
    if (split) {
      sizes = int_list(*split, where_, "split");
      if (static_cast<int64_t>(sizes.size()) != n_out_)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: input 'split' has {} sizes for {} outputs", where_, sizes.size(), n_out_));
      for (int64_t v : sizes)
        if (v < 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input 'split' has a negative size {}", where_, v));
    } else if (has_split_attr_) {
      sizes = split_attr_;
    } else if (num_outputs_ > 0) {
      const int64_t chunk = (dim + n_out_ - 1) / n_out_;
      sizes.assign(static_cast<size_t>(n_out_), chunk);
      sizes.back() = dim - chunk * (n_out_ - 1);
      if (sizes.back() < 0)
        fail(ErrorCode::InvalidInput,
             fmt::format("{}: axis {} of size {} cannot be split into {} outputs", where_, axis, dim, n_out_));
    } else {
      if (dim % n_out_ != 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: axis {} of size {} does not split into {} equal parts", where_,
                                                  axis, dim, n_out_));
      sizes.assign(static_cast<size_t>(n_out_), dim / n_out_);
    }
    int64_t total = 0;
    for (int64_t v : sizes) total = checked_add(total, v, fmt::format("{}: sum of split sizes", where_));
    if (total != dim)
      fail(ErrorCode::InvalidInput, fmt::format("{}: split sizes {} add up to {}, but axis {} has size {}", where_,
                                                shape_str(sizes), total, axis, dim));
    const int64_t outer = product(x.shape, 0, axis), inner = product(x.shape, axis + 1, x.shape.size());
    int64_t begin = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<int64_t> shape = x.shape;
      shape[axis] = sizes[k];
      Tensor y(x.type, shape);
      const int64_t chunk = sizes[k] * inner;
      visit2(x, y, [&](const auto& src, auto& dst) {
        auto o = dst.begin();
        for (int64_t r = 0; r < outer; ++r) {
          auto from = src.begin() + static_cast<std::ptrdiff_t>((r * dim + begin) * inner);
          o = std::copy(from, from + static_cast<std::ptrdiff_t>(chunk), o);
        }
      });
      begin += sizes[k];
      set_out(out, k, std::move(y));
    }
  }

 private:
  std::string where_;
  int64_t axis_ = 0;
  int64_t n_out_ = 1;
  bool has_split_attr_ = false;
  std::vector<int64_t> split_attr_;
  bool split_input_ = false;
  int64_t num_outputs_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Transpose (perm, default reversed)

class Transpose final : public Kernel {
 public:
  explicit Transpose(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    need_inputs(ctx, 1, where_);
    has_perm_ = ctx.attrs.has("perm");
    perm_ = ctx.attrs.get_ints("perm");
    std::vector<bool> seen(perm_.size(), false);
    for (int64_t p : perm_) {
      if (p < 0 || p >= static_cast<int64_t>(perm_.size()) || seen[static_cast<size_t>(p)])
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'perm' {} is not a permutation of 0..{}", where_, shape_str(perm_),
                         static_cast<int64_t>(perm_.size()) - 1));
      seen[static_cast<size_t>(p)] = true;
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    const size_t rank = x.shape.size();
    std::vector<int64_t> perm = perm_;
    if (!has_perm_) {
      perm.resize(rank);
      for (size_t d = 0; d < rank; ++d) perm[d] = static_cast<int64_t>(rank - 1 - d);
    } else if (perm.size() != rank) {
      fail(ErrorCode::InvalidInput, fmt::format("{}: perm {} does not fit an input of rank {}", where_,
                                                shape_str(perm), rank));
    }
    const std::vector<int64_t> xs = strides_of(x.shape);
    std::vector<int64_t> shape(rank);
    for (size_t d = 0; d < rank; ++d) shape[d] = x.shape[static_cast<size_t>(perm[d])];
    Tensor y(x.type, shape);
    if (y.numel() > 0) {
      AxisMaps maps(rank);
      for (size_t d = 0; d < rank; ++d) {
        const size_t p = static_cast<size_t>(perm[d]);
        maps[d].resize(static_cast<size_t>(std::max<int64_t>(shape[d], 1)));
        for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = static_cast<int64_t>(i) * xs[p];
      }
      gather_mapped(x, y, maps);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool has_perm_ = false;
  std::vector<int64_t> perm_;
};

// ---------------------------------------------------------------------------------------------------
// Squeeze / Unsqueeze: axes attribute (opset < 13) or input (opset >= 13)

class Squeeze final : public Kernel {
 public:
  Squeeze(const KernelContext& ctx, bool unsqueeze) : where_(ctx.attrs.where()), unsqueeze_(unsqueeze) {
    need_inputs(ctx, 1, where_);
    from_input_ = at_least(ctx.opset, 13) && !(ctx.opset == 0 && ctx.attrs.has("axes"));
    if (from_input_) {
      if (ctx.attrs.has("axes"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'axes' became an input in opset 13", where_));
      if (unsqueeze_) need_inputs(ctx, 2, where_);
    } else {
      if (has_input(ctx, 1))
        fail(ErrorCode::InvalidModel, fmt::format("{}: the 'axes' input needs opset 13", where_));
      if (unsqueeze_ && !ctx.attrs.has("axes"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: lacks required attribute 'axes'", where_));
      axes_ = ctx.attrs.get_ints("axes");
      check_unique_attr(axes_, where_, "axes");
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    std::vector<int64_t> axes = axes_;
    if (from_input_) {
      const Tensor* a = unsqueeze_ ? &input(in, 1, where_, "axes") : optional_input(in, 1, where_, "axes");
      if (a) axes = int_list(*a, where_, "axes");
    }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::vector<int64_t> shape;
    if (unsqueeze_) {
      const int64_t out_rank = rank + static_cast<int64_t>(axes.size());
      axes = normalize_axes(axes, out_rank, where_);
      std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
      for (int64_t a : axes) inserted[static_cast<size_t>(a)] = true;
      size_t from = 0;
      for (int64_t d = 0; d < out_rank; ++d) shape.push_back(inserted[static_cast<size_t>(d)] ? 1 : x.shape[from++]);
    } else {
      std::vector<bool> drop(static_cast<size_t>(rank), false);
      if (axes.empty()) {
        for (size_t d = 0; d < x.shape.size(); ++d) drop[d] = x.shape[d] == 1;
      } else {
        for (int64_t a : normalize_axes(axes, rank, where_)) {
          if (x.shape[static_cast<size_t>(a)] != 1)
            fail(ErrorCode::InvalidInput, fmt::format("{}: cannot squeeze axis {} of size {} (input shape {})", where_,
                                                      a, x.shape[static_cast<size_t>(a)], shape_str(x.shape)));
          drop[static_cast<size_t>(a)] = true;
        }
      }
      for (size_t d = 0; d < x.shape.size(); ++d)
        if (!drop[d]) shape.push_back(x.shape[d]);
    }
    Tensor y = x;
    y.shape = std::move(shape);
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool unsqueeze_ = false;
  bool from_input_ = false;
  std::vector<int64_t> axes_;
};

// ---------------------------------------------------------------------------------------------------
// Shape (opset 15: start/end, negative from the end, clamped) and Size

class Shape final : public Kernel {
 public:
  explicit Shape(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    need_inputs(ctx, 1, where_);
    if ((ctx.attrs.has("start") || ctx.attrs.has("end")) && !at_least(ctx.opset, 15))
      fail(ErrorCode::InvalidModel, fmt::format("{}: attributes 'start' and 'end' need opset 15", where_));
    start_ = ctx.attrs.get_int("start", 0);
    has_end_ = ctx.attrs.has("end");
    end_ = ctx.attrs.get_int("end", 0);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    auto clamp = [&](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
    const int64_t s = clamp(start_), e = has_end_ ? clamp(end_) : rank;
    std::vector<int64_t> dims;
    for (int64_t d = s; d < e; ++d) dims.push_back(x.shape[static_cast<size_t>(d)]);
    const int64_t n = static_cast<int64_t>(dims.size());
    set_out(out, 0, Tensor::int64s({n}, std::move(dims)));
  }

 private:
  std::string where_;
  int64_t start_ = 0, end_ = 0;
  bool has_end_ = false;
};

class Size final : public Kernel {
 public:
  explicit Size(const KernelContext& ctx) : where_(ctx.attrs.where()) { need_inputs(ctx, 1, where_); }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    set_out(out, 0, Tensor::int64s({}, {x.numel()}));
  }

 private:
  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// ConstantOfShape (value: a one-element tensor, default float 0)

class ConstantOfShape final : public Kernel {
 public:
  explicit ConstantOfShape(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    need_inputs(ctx, 1, where_);
    if (ctx.attrs.has("value")) {
      value_ = ctx.attrs.get_tensor("value");
      if (value_.size() != 1)
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'value' holds {} values; it must hold exactly one", where_, value_.size()));
      if (value_.type == ElemType::String)
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'value' may not be a string tensor", where_));
    } else {
      value_ = Tensor::floats({1}, {0.0f});
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& s = input(in, 0, where_, "input");
    if (s.type != ElemType::Int64 || s.shape.size() != 1)
      fail(ErrorCode::InvalidInput, fmt::format("{}: input must be a 1-D int64 tensor, got {} of shape {}", where_,
                                                to_string(s.type), shape_str(s.shape)));
    Tensor y = make_output(value_.type, s.i, where_);
    visit_mut(y, [&](auto& dst) {
      using V = std::decay_t<decltype(dst)>;
      std::fill(dst.begin(), dst.end(), storage_as<V>(value_)[0]);
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  Tensor value_;
};

// ---------------------------------------------------------------------------------------------------
// Expand (bidirectional broadcast of the input with the requested shape) and Tile

class Expand final : public Kernel {
 public:
  explicit Expand(const KernelContext& ctx) : where_(ctx.attrs.where()) { need_inputs(ctx, 2, where_); }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    const std::vector<int64_t>& req = int_list(input(in, 1, where_, "shape"), where_, "shape");
    for (int64_t d : req)
      if (d < 0) fail(ErrorCode::InvalidInput, fmt::format("{}: shape {} has a negative dimension", where_, shape_str(req)));
    const size_t r = std::max(x.shape.size(), req.size());
    std::vector<int64_t> shape(r);
    std::vector<int64_t> xdim(r, 1);  // x's dimensions aligned right
    for (size_t k = 0; k < x.shape.size(); ++k) xdim[k + r - x.shape.size()] = x.shape[k];
    for (size_t k = 0; k < r; ++k) {
      const int64_t a = xdim[k];
      const int64_t b = k < r - req.size() ? 1 : req[k - (r - req.size())];
      if (a == b || b == 1) shape[k] = a;
      else if (a == 1) shape[k] = b;
      else
        fail(ErrorCode::InvalidInput, fmt::format("{}: input shape {} does not broadcast with shape {}", where_,
                                                  shape_str(x.shape), shape_str(req)));
    }
    // The output is checked (and allocated) before the axis maps, which are as long as its dimensions.
    Tensor y = make_output(x.type, shape, where_);
    if (y.numel() > 0) {
      const std::vector<int64_t> xs = strides_of(xdim);
      AxisMaps maps(r);
      for (size_t d = 0; d < r; ++d) {
        maps[d].resize(static_cast<size_t>(std::max<int64_t>(shape[d], 1)));
        for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = xdim[d] == 1 ? 0 : static_cast<int64_t>(i) * xs[d];
      }
      gather_mapped(x, y, maps);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
};

class Tile final : public Kernel {
 public:
  explicit Tile(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    if (ctx.opset > 0 && ctx.opset < 6)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("{}: opset {} (tiles and axis inputs) is not supported; opset 6 or later is", where_, ctx.opset));
    need_inputs(ctx, 2, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "input");
    const std::vector<int64_t>& reps = int_list(input(in, 1, where_, "repeats"), where_, "repeats");
    if (reps.size() != x.shape.size())
      fail(ErrorCode::InvalidInput, fmt::format("{}: repeats {} has {} values for an input of rank {}", where_,
                                                shape_str(reps), reps.size(), x.shape.size()));
    std::vector<int64_t> shape(x.shape.size());
    for (size_t d = 0; d < shape.size(); ++d) {
      if (reps[d] < 0)
        fail(ErrorCode::InvalidInput, fmt::format("{}: repeats {} has a negative value", where_, shape_str(reps)));
      shape[d] = checked_mul(x.shape[d], reps[d], fmt::format("{}: output size along axis {}", where_, d));
    }
    Tensor y = make_output(x.type, shape, where_);
    if (y.numel() > 0) {
      const std::vector<int64_t> xs = strides_of(x.shape);
      AxisMaps maps(shape.size());
      for (size_t d = 0; d < shape.size(); ++d) {
        maps[d].resize(static_cast<size_t>(shape[d]));
        for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = (static_cast<int64_t>(i) % x.shape[d]) * xs[d];
      }
      gather_mapped(x, y, maps);
    }
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
};

// ---------------------------------------------------------------------------------------------------
// Range: start, start + delta, ... below (above, for a negative delta) limit.

class Range final : public Kernel {
 public:
  explicit Range(const KernelContext& ctx) : where_(ctx.attrs.where()) { need_inputs(ctx, 3, where_); }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& s = input(in, 0, where_, "start");
    const Tensor& l = input(in, 1, where_, "limit");
    const Tensor& d = input(in, 2, where_, "delta");
    require_numeric(s, where_, "start");
    if (l.type != s.type || d.type != s.type)
      fail(ErrorCode::InvalidModel, fmt::format("{}: start, limit and delta have element types {}, {} and {}; they "
                                                "must match",
                                                where_, to_string(s.type), to_string(l.type), to_string(d.type)));
    for (const Tensor* t : {&s, &l, &d})
      if (t->size() != 1 || t->shape.size() > 1)
        fail(ErrorCode::InvalidInput, fmt::format("{}: start, limit and delta must be scalars, got shape {}", where_,
                                                  shape_str(t->shape)));
    Tensor y;
    switch (s.type) {
      case ElemType::Float: y = fill<float>(s.f[0], l.f[0], d.f[0]); break;
      case ElemType::Double: y = fill<double>(s.d[0], l.d[0], d.d[0]); break;
      default: y = fill_int(s.i[0], l.i[0], d.i[0]); break;
    }
    set_out(out, 0, std::move(y));
  }

 private:
  template <typename T>
  Tensor fill(T start, T limit, T delta) const {
    if (delta == T(0)) fail(ErrorCode::InvalidInput, fmt::format("{}: delta is 0", where_));
    const double q = std::ceil(static_cast<double>(limit - start) / static_cast<double>(delta));
    if (std::isnan(q))
      fail(ErrorCode::InvalidInput, fmt::format("{}: start {}, limit {} and delta {} give no count", where_, start,
                                                limit, delta));
    if (q > static_cast<double>(kMaxOutputElements))
      fail(ErrorCode::LimitExceeded,
           fmt::format("{}: start {}, limit {} and delta {} give more than {} elements", where_, start, limit, delta,
                       kMaxOutputElements));
    const int64_t n = q > 0 ? static_cast<int64_t>(q) : 0;
    Tensor y(std::is_same_v<T, float> ? ElemType::Float : ElemType::Double, {n});
    std::vector<T>& v = [&]() -> std::vector<T>& {
      if constexpr (std::is_same_v<T, float>) return y.f;
      else return y.d;
    }();
    T value = start;
    for (int64_t k = 0; k < n; ++k) {
      v[static_cast<size_t>(k)] = value;
      value += delta;
    }
    return y;
  }

  Tensor fill_int(int64_t start, int64_t limit, int64_t delta) const {
    if (delta == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: delta is 0", where_));
    const __int128 diff = static_cast<__int128>(limit) - start;
    __int128 n = 0;
    if (delta > 0 && diff > 0) n = (diff + delta - 1) / delta;
    if (delta < 0 && diff < 0) n = (-diff + (-static_cast<__int128>(delta)) - 1) / -static_cast<__int128>(delta);
    if (n > kMaxOutputElements)
      fail(ErrorCode::LimitExceeded, fmt::format("{}: start {}, limit {} and delta {} give more than {} elements",
                                                 where_, start, limit, delta, kMaxOutputElements));
    Tensor y(ElemType::Int64, {static_cast<int64_t>(n)});
    for (size_t k = 0; k < y.i.size(); ++k) y.i[k] = static_cast<int64_t>(start + static_cast<__int128>(k) * delta);
    return y;
  }

  std::string where_;
};

}  // namespace

void register_shape_kernels(KernelRegistry& r) {
  add<Split>(r, "Split");
  add<Transpose>(r, "Transpose");
  r.add("", "Squeeze", [](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Squeeze>(ctx, false);
  });
  r.add("", "Unsqueeze", [](const KernelContext& ctx) -> std::unique_ptr<Kernel> {
    return std::make_unique<Squeeze>(ctx, true);
  });
  add<Shape>(r, "Shape");
  add<Size>(r, "Size");
  add<ConstantOfShape>(r, "ConstantOfShape");
  add<Expand>(r, "Expand");
  add<Tile>(r, "Tile");
  add<Range>(r, "Range");
}

}  // namespace tensor_ops
}  // namespace flock
