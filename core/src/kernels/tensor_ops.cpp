// Default-domain (ai.onnx) shape, indexing and reduction operators, opsets 9-17 (and the newer
// input forms where they are a superset): Gather, GatherElements, Split, Slice, Transpose, Squeeze,
// Unsqueeze, Shape, Size, ConstantOfShape, Expand, Tile, Range, TopK, the Reduce family, Pad, OneHot,
// NonZero, CumSum, Resize.
//
// Element types: float, double, int64 (int32 and narrower integers arrive as int64), bool, and
// string where the operator is type-agnostic. Index arithmetic is flat, over precomputed per-axis
// offset tables ("axis maps"); nothing allocates per element.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "flock/checked.hpp"
#include "flock/kernel.hpp"

namespace flock {
namespace {

// ---- shared helpers ----

// True when the node's opset is at least `v`; opset 0 means the newest.
bool at_least(int64_t opset, int64_t v) { return opset == 0 || opset >= v; }

const Tensor& input(const std::vector<const Tensor*>& in, size_t k, const std::string& where, const char* name) {
  if (k >= in.size() || in[k] == nullptr)
    fail(ErrorCode::InvalidInput, fmt::format("{}: input {} ('{}') is missing", where, k, name));
  const Tensor& t = *in[k];
  if (static_cast<int64_t>(t.size()) != t.numel())
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' holds {} values but its shape needs {}", where, name, t.size(), t.numel()));
  return t;
}

// An optional input: nullptr when omitted.
const Tensor* optional_input(const std::vector<const Tensor*>& in, size_t k, const std::string& where,
                             const char* name) {
  if (k >= in.size() || in[k] == nullptr) return nullptr;
  return &input(in, k, where, name);
}

// Compile time: the node names at least `n` inputs and the first `n` are not omitted.
void need_inputs(const KernelContext& ctx, int n, const std::string& where) {
  bool ok = ctx.node.input_size() >= n;
  for (int k = 0; ok && k < n; ++k) ok = !ctx.node.input(k).empty();
  if (!ok)
    fail(ErrorCode::InvalidModel,
         fmt::format("{}: needs {} input{}, has {}", where, n, n == 1 ? "" : "s", ctx.node.input_size()));
}

// Compile time: whether optional input `k` is named.
bool has_input(const KernelContext& ctx, int k) { return ctx.node.input_size() > k && !ctx.node.input(k).empty(); }

void set_out(std::vector<Tensor>& out, size_t k, Tensor t) {
  if (k < out.size()) out[k] = std::move(t);
}

// Product of dimensions [from, to) of a shape; checked, as shapes here are often computed from input
// values before anything is allocated for them.
int64_t product(const std::vector<int64_t>& s, size_t from, size_t to) {
  return checked_numel(std::span<const int64_t>(s.data() + from, to - from), "shape product",
                       ErrorCode::InvalidInput);
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// Row-major element strides of a shape.
std::vector<int64_t> strides_of(const std::vector<int64_t>& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}

// Ceiling on the elements one kernel output may hold; guards shapes computed from input values
// (ConstantOfShape, Expand, Tile, Range, Pad) before anything is allocated. The plan checks its own,
// configurable limit on every output afterwards.
constexpr int64_t kMaxOutputElements = int64_t(1) << 31;

// Validates an output shape: no negative dimension, no overflow (also of its non-zero dimensions: a
// shape like [0, 2^40] holds nothing but its axis maps would be huge), under the ceiling.
int64_t checked_output_numel(const std::vector<int64_t>& s, const std::string& where) {
  for (int64_t d : s) {
    if (d < 0)
      fail(ErrorCode::InvalidInput, fmt::format("{}: output shape {} has a negative dimension", where, shape_str(s)));
  }
  int64_t nonzero = 1;
  for (int64_t d : s) {
    if (d == 0) continue;
    if (nonzero > kMaxOutputElements / d)
      fail(ErrorCode::LimitExceeded, fmt::format("{}: output shape {} holds more than {} elements", where,
                                                 shape_str(s), kMaxOutputElements));
    nonzero *= d;
  }
  return std::find(s.begin(), s.end(), 0) != s.end() ? 0 : nonzero;
}

Tensor make_output(ElemType type, std::vector<int64_t> shape, const std::string& where) {
  checked_output_numel(shape, where);
  return Tensor(type, std::move(shape));
}

// Normalizes `axis` into [0, rank).
int64_t normalize_axis(int64_t axis, int64_t rank, const std::string& where) {
  if (axis < -rank || axis >= rank)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: axis {} is out of range for an input of rank {}", where, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

// Normalizes a list of axes into [0, rank), rejecting duplicates.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const std::string& where) {
  std::vector<int64_t> out;
  out.reserve(axes.size());
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    const int64_t n = normalize_axis(a, rank, where);
    if (seen[static_cast<size_t>(n)])
      fail(ErrorCode::InvalidInput, fmt::format("{}: axes {} name axis {} twice", where, shape_str(axes), n));
    seen[static_cast<size_t>(n)] = true;
    out.push_back(n);
  }
  return out;
}

// Compile time: an `axes` attribute must not repeat a value.
void check_unique_attr(const std::vector<int64_t>& v, const std::string& where, const char* name) {
  for (size_t a = 0; a < v.size(); ++a)
    for (size_t b = a + 1; b < v.size(); ++b)
      if (v[a] == v[b])
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' {} repeats {}", where, name, shape_str(v), v[a]));
}

// Element-type errors are properties of the graph, not of the values: an element type the operator
// does not run is UnsupportedOperator, inputs whose types must agree and do not are InvalidModel (so
// the trial run at load reports both). Shapes and values that do not fit are InvalidInput.

// An int64 (or narrower integer) 1-D input, as a list.
const std::vector<int64_t>& int_list(const Tensor& t, const std::string& where, const char* name) {
  if (t.type != ElemType::Int64)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: input '{}' has element type {}; expected int64", where, name, to_string(t.type)));
  if (t.shape.size() > 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' has shape {}; expected a 1-D tensor", where, name, shape_str(t.shape)));
  return t.i;
}

// An int64 input holding exactly one value (a scalar or a 1-element 1-D tensor).
int64_t int_scalar(const Tensor& t, const std::string& where, const char* name) {
  if (t.type != ElemType::Int64)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: input '{}' has element type {}; expected int64", where, name, to_string(t.type)));
  if (t.shape.size() > 1 || t.i.size() != 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' has shape {}; expected a single value", where, name, shape_str(t.shape)));
  return t.i[0];
}

void require_numeric(const Tensor& t, const std::string& where, const char* name) {
  if (t.type != ElemType::Float && t.type != ElemType::Double && t.type != ElemType::Int64)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: input '{}' has element type {}; expected float, double or int64", where, name,
                     to_string(t.type)));
}

// Calls f(src_storage, dst_storage) with the storage vectors of the tensors' (shared) element type.
template <typename F>
void visit2(const Tensor& x, Tensor& y, F&& f) {
  switch (x.type) {
    case ElemType::Float: f(x.f, y.f); return;
    case ElemType::Double: f(x.d, y.d); return;
    case ElemType::Int64: f(x.i, y.i); return;
    case ElemType::String: f(x.s, y.s); return;
    case ElemType::Bool: f(x.b, y.b); return;
  }
}

template <typename F>
void visit(const Tensor& t, F&& f) {
  switch (t.type) {
    case ElemType::Float: f(t.f); return;
    case ElemType::Double: f(t.d); return;
    case ElemType::Int64: f(t.i); return;
    case ElemType::String: f(t.s); return;
    case ElemType::Bool: f(t.b); return;
  }
}

template <typename F>
void visit_mut(Tensor& t, F&& f) {
  switch (t.type) {
    case ElemType::Float: f(t.f); return;
    case ElemType::Double: f(t.d); return;
    case ElemType::Int64: f(t.i); return;
    case ElemType::String: f(t.s); return;
    case ElemType::Bool: f(t.b); return;
  }
}

// Per output axis, the source element offset each index along that axis contributes, or -1 when
// the index falls outside the source (Pad's constant fill).
using AxisMaps = std::vector<std::vector<int64_t>>;

// Visits every index of `shape` in row-major order: f(flat, offset), where offset is the sum of the
// axis maps' terms, or -1 when any term is -1.
template <typename F>
void for_each_mapped(const std::vector<int64_t>& shape, const AxisMaps& maps, F&& f) {
  const int64_t total = product(shape, 0, shape.size());
  if (total <= 0) return;
  const size_t r = shape.size();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  int bad = 0;
  auto add = [&](int64_t v, int sign) {
    if (v < 0) bad += sign;
    else off += sign * v;
  };
  for (size_t d = 0; d < r; ++d) add(maps[d][0], 1);
  for (int64_t k = 0; k < total; ++k) {
    f(k, bad ? int64_t(-1) : off);
    for (size_t d = r; d-- > 0;) {
      add(maps[d][static_cast<size_t>(idx[d])], -1);
      if (++idx[d] < shape[d]) {
        add(maps[d][static_cast<size_t>(idx[d])], 1);
        break;
      }
      idx[d] = 0;
      add(maps[d][0], 1);
    }
  }
}

// The storage vector of type V (std::vector<float>, ...) of a tensor whose type matches.
template <typename V>
const V& storage_as(const Tensor& t) {
  if constexpr (std::is_same_v<V, std::vector<float>>) return t.f;
  else if constexpr (std::is_same_v<V, std::vector<double>>) return t.d;
  else if constexpr (std::is_same_v<V, std::vector<int64_t>>) return t.i;
  else if constexpr (std::is_same_v<V, std::vector<std::string>>) return t.s;
  else return t.b;
}

// y[k] = x[offset(k)] over y's shape; where the offset is -1, the one value of `fill` (same type).
void gather_mapped(const Tensor& x, Tensor& y, const AxisMaps& maps, const Tensor* fill = nullptr) {
  visit2(x, y, [&](const auto& src, auto& dst) {
    using V = std::decay_t<decltype(dst)>;
    const typename V::value_type fv = fill ? storage_as<V>(*fill)[0] : typename V::value_type{};
    for_each_mapped(y.shape, maps, [&](int64_t k, int64_t off) {
      dst[static_cast<size_t>(k)] = off < 0 ? fv : src[static_cast<size_t>(off)];
    });
  });
}

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

// ---------------------------------------------------------------------------------------------------
// TopK: k (attribute before opset 10, input after), axis, largest and sorted (opset 11). Equal values
// keep the lower index first; NaN ranks above every number.

class TopK final : public Kernel {
 public:
  explicit TopK(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    axis_ = ctx.attrs.get_int("axis", -1);
    if ((ctx.attrs.has("largest") || ctx.attrs.has("sorted")) && !at_least(ctx.opset, 11))
      fail(ErrorCode::InvalidModel, fmt::format("{}: attributes 'largest' and 'sorted' need opset 11", where_));
    largest_ = ctx.attrs.get_int("largest", 1) != 0;
    if (!at_least(ctx.opset, 10)) {
      need_inputs(ctx, 1, where_);
      k_attr_ = ctx.attrs.get_int("k");
      if (k_attr_ < 0) fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'k' is negative ({})", where_, k_attr_));
    } else {
      if (ctx.attrs.has("k"))
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute 'k' became an input in opset 10", where_));
      need_inputs(ctx, 2, where_);
      k_input_ = true;
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "X");
    require_numeric(x, where_, "X");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; it needs rank >= 1", where_));
    const size_t axis = static_cast<size_t>(normalize_axis(axis_, rank, where_));
    const int64_t n = x.shape[axis];
    const int64_t k = k_input_ ? int_scalar(input(in, 1, where_, "K"), where_, "K") : k_attr_;
    if (k < 0 || k > n)
      fail(ErrorCode::InvalidInput, fmt::format("{}: k = {} is out of range for axis {} of size {}", where_, k, axis, n));
    std::vector<int64_t> shape = x.shape;
    shape[axis] = k;
    Tensor values(x.type, shape), indices(ElemType::Int64, shape);
    const int64_t outer = product(x.shape, 0, axis), inner = product(x.shape, axis + 1, x.shape.size());
    std::vector<int64_t> order(static_cast<size_t>(n));
    visit2(x, values, [&](const auto& src, auto& dst) {
      using T = typename std::decay_t<decltype(src)>::value_type;
      if constexpr (std::is_arithmetic_v<T>) {
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            const size_t base = static_cast<size_t>(o * n * inner + i);
            auto at = [&](int64_t j) { return src[base + static_cast<size_t>(j * inner)]; };
            auto before = [&](int64_t a, int64_t b) {
              const T va = at(a), vb = at(b);
              if constexpr (std::is_floating_point_v<T>) {
                const bool na = std::isnan(va), nb = std::isnan(vb);
                if (na || nb) {
                  if (na && nb) return a < b;
                  return largest_ ? na : nb;
                }
              }
              if (va != vb) return largest_ ? va > vb : va < vb;
              return a < b;
            };
            std::iota(order.begin(), order.end(), int64_t(0));
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), before);
            for (int64_t j = 0; j < k; ++j) {
              const size_t to = static_cast<size_t>((o * k + j) * inner + i);
              dst[to] = at(order[static_cast<size_t>(j)]);
              indices.i[to] = order[static_cast<size_t>(j)];
            }
          }
        }
      }
    });
    set_out(out, 0, std::move(values));
    set_out(out, 1, std::move(indices));
  }

 private:
  std::string where_;
  int64_t axis_ = -1;
  bool largest_ = true;
  bool k_input_ = false;
  int64_t k_attr_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Reduce family. axes: attribute, or input from opset 13 (ReduceSum) / 18 (the rest), with
// noop_with_empty_axes. Reducing an empty set gives the operation's identity (0, 1, -inf for Max, ...).

enum class Red { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
int64_t wrap_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}
int64_t wrap_abs(int64_t a) { return a < 0 ? static_cast<int64_t>(0 - static_cast<uint64_t>(a)) : a; }

// x86 cvttsd2si semantics for a double that does not fit.
int64_t to_int64(double v) {
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

class Reduce final : public Kernel {
 public:
  Reduce(const KernelContext& ctx, Red op) : where_(ctx.attrs.where()), op_(op) {
    need_inputs(ctx, 1, where_);
    keepdims_ = ctx.attrs.get_int("keepdims", 1) != 0;
    const int64_t input_since = op == Red::Sum ? 13 : 18;
    from_input_ = at_least(ctx.opset, input_since) && !(ctx.opset == 0 && ctx.attrs.has("axes"));
    if (from_input_) {
      if (ctx.attrs.has("axes"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'axes' became an input in opset {}", where_, input_since));
      noop_ = ctx.attrs.get_int("noop_with_empty_axes", 0) != 0;
    } else {
      if (has_input(ctx, 1))
        fail(ErrorCode::InvalidModel, fmt::format("{}: the 'axes' input needs opset {}", where_, input_since));
      if (ctx.attrs.has("noop_with_empty_axes"))
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: attribute 'noop_with_empty_axes' needs opset {}", where_, input_since));
      axes_ = ctx.attrs.get_ints("axes");
      check_unique_attr(axes_, where_, "axes");
    }
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "data");
    require_numeric(x, where_, "data");
    std::vector<int64_t> axes = axes_;
    if (from_input_)
      if (const Tensor* a = optional_input(in, 1, where_, "axes")) axes = int_list(*a, where_, "axes");
    if (axes.empty() && noop_) {
      set_out(out, 0, x);
      return;
    }
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    std::vector<bool> reduced(x.shape.size(), axes.empty());
    for (int64_t a : normalize_axes(axes, rank, where_)) reduced[static_cast<size_t>(a)] = true;
    std::vector<int64_t> shape, kept;  // output shape; the output's dims without the dropped ones
    int64_t count = 1;
    for (size_t d = 0; d < x.shape.size(); ++d) {
      if (reduced[d]) {
        count *= x.shape[d];
        if (keepdims_) shape.push_back(1);
      } else {
        shape.push_back(x.shape[d]);
      }
    }
    // Output offset of each input index: 0 along reduced axes, the output stride along kept ones.
    AxisMaps maps(x.shape.size());
    int64_t stride = 1;
    const bool empty = x.numel() == 0;  // nothing to visit; a shape like [0, 2^40] must not size the maps
    for (size_t d = x.shape.size(); d-- > 0 && !empty;) {
      maps[d].assign(static_cast<size_t>(std::max<int64_t>(x.shape[d], 1)), 0);
      if (!reduced[d]) {
        for (size_t i = 0; i < maps[d].size(); ++i) maps[d][i] = static_cast<int64_t>(i) * stride;
        stride *= x.shape[d];
      }
    }
    Tensor y(x.type, shape);
    switch (x.type) {
      case ElemType::Float: reduce_real(x.f, x.shape, maps, count, y.f); break;
      case ElemType::Double: reduce_real(x.d, x.shape, maps, count, y.d); break;
      default:
        if (op_ == Red::L2 || op_ == Red::LogSum || op_ == Red::LogSumExp) reduce_real(x.i, x.shape, maps, count, y.i);
        else reduce_int(x.i, x.shape, maps, count, y.i);
        break;
    }
    set_out(out, 0, std::move(y));
  }

 private:
  // Accumulates in double; integers are truncated on the way out.
  template <typename T>
  void reduce_real(const std::vector<T>& x, const std::vector<int64_t>& shape, const AxisMaps& maps, int64_t count,
                   std::vector<T>& y) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    const double init = op_ == Red::Prod ? 1.0 : op_ == Red::Max ? -inf : op_ == Red::Min ? inf : 0.0;
    std::vector<double> acc(y.size(), init);
    std::vector<double> mx;
    if (op_ == Red::LogSumExp) {
      mx.assign(y.size(), -inf);
      for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
        const double v = static_cast<double>(x[static_cast<size_t>(k)]);
        double& m = mx[static_cast<size_t>(o)];
        if (v > m) m = v;
      });
    }
    for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
      const double v = static_cast<double>(x[static_cast<size_t>(k)]);
      double& a = acc[static_cast<size_t>(o)];
      switch (op_) {
        case Red::Sum: case Red::Mean: case Red::LogSum: a += v; break;
        case Red::Prod: a *= v; break;
        case Red::Max: if (std::isnan(v) || v > a) a = v; break;
        case Red::Min: if (std::isnan(v) || v < a) a = v; break;
        case Red::L1: a += std::fabs(v); break;
        case Red::L2: case Red::SumSquare: a += v * v; break;
        case Red::LogSumExp: {
          const double m = mx[static_cast<size_t>(o)];
          a += std::isnan(v) ? v : std::isinf(m) ? 0.0 : std::exp(v - m);
          break;
        }
      }
    });
    for (size_t o = 0; o < y.size(); ++o) {
      double r = acc[o];
      switch (op_) {
        case Red::Mean: r = r / static_cast<double>(count); break;
        case Red::L2: r = std::sqrt(r); break;
        case Red::LogSum: r = std::log(r); break;
        case Red::LogSumExp: r = std::isnan(r) ? r : std::isinf(mx[o]) ? mx[o] : mx[o] + std::log(r); break;
        default: break;
      }
      if constexpr (std::is_integral_v<T>) y[o] = to_int64(r);
      else y[o] = static_cast<T>(r);
    }
  }

  // Exact (wrapping) int64 arithmetic for Sum, Mean, Max, Min, Prod, L1 and SumSquare.
  void reduce_int(const std::vector<int64_t>& x, const std::vector<int64_t>& shape, const AxisMaps& maps,
                  int64_t count, std::vector<int64_t>& y) const {
    const int64_t init = op_ == Red::Prod ? 1
                         : op_ == Red::Max ? std::numeric_limits<int64_t>::min()
                         : op_ == Red::Min ? std::numeric_limits<int64_t>::max()
                                           : 0;
    std::fill(y.begin(), y.end(), init);
    for_each_mapped(shape, maps, [&](int64_t k, int64_t o) {
      const int64_t v = x[static_cast<size_t>(k)];
      int64_t& a = y[static_cast<size_t>(o)];
      switch (op_) {
        case Red::Prod: a = wrap_mul(a, v); break;
        case Red::Max: a = std::max(a, v); break;
        case Red::Min: a = std::min(a, v); break;
        case Red::L1: a = wrap_add(a, wrap_abs(v)); break;
        case Red::SumSquare: a = wrap_add(a, wrap_mul(v, v)); break;
        default: a = wrap_add(a, v); break;
      }
    });
    if (op_ == Red::Mean)
      for (int64_t& a : y) a = count > 0 ? a / count : 0;
  }

  std::string where_;
  Red op_;
  bool keepdims_ = true;
  bool from_input_ = false;
  bool noop_ = false;
  std::vector<int64_t> axes_;
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

// ---------------------------------------------------------------------------------------------------
// CumSum (axis input; exclusive, reverse)

class CumSum final : public Kernel {
 public:
  explicit CumSum(const KernelContext& ctx)
      : where_(ctx.attrs.where()),
        exclusive_(ctx.attrs.get_int("exclusive", 0) != 0),
        reverse_(ctx.attrs.get_int("reverse", 0) != 0) {
    need_inputs(ctx, 2, where_);
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor& x = input(in, 0, where_, "x");
    require_numeric(x, where_, "x");
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    if (rank == 0) fail(ErrorCode::InvalidInput, fmt::format("{}: input is a scalar; it needs rank >= 1", where_));
    const size_t axis =
        static_cast<size_t>(normalize_axis(int_scalar(input(in, 1, where_, "axis"), where_, "axis"), rank, where_));
    const int64_t outer = product(x.shape, 0, axis), n = x.shape[axis],
                  inner = product(x.shape, axis + 1, x.shape.size());
    Tensor y(x.type, x.shape);
    visit2(x, y, [&](const auto& src, auto& dst) {
      using T = typename std::decay_t<decltype(src)>::value_type;
      if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, uint8_t>) {
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t i = 0; i < inner; ++i) {
            T acc{};
            for (int64_t s = 0; s < n; ++s) {
              const int64_t j = reverse_ ? n - 1 - s : s;
              const size_t at = static_cast<size_t>((o * n + j) * inner + i);
              if (exclusive_) dst[at] = acc;
              if constexpr (std::is_integral_v<T>) acc = wrap_add(acc, src[at]);
              else acc += src[at];
              if (!exclusive_) dst[at] = acc;
            }
          }
        }
      }
    });
    set_out(out, 0, std::move(y));
  }

 private:
  std::string where_;
  bool exclusive_ = false, reverse_ = false;
};

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

template <typename K>
void add(KernelRegistry& r, const char* op) {
  r.add("", op, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

void add_reduce(KernelRegistry& r, const char* op, Red red) {
  r.add("", op, [red](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<Reduce>(ctx, red); });
}

}  // namespace

void register_tensor_kernels(KernelRegistry& r) {
  add<Gather>(r, "Gather");
  add<GatherElements>(r, "GatherElements");
  add<Split>(r, "Split");
  add<Slice>(r, "Slice");
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
  add<TopK>(r, "TopK");
  add_reduce(r, "ReduceSum", Red::Sum);
  add_reduce(r, "ReduceMean", Red::Mean);
  add_reduce(r, "ReduceMax", Red::Max);
  add_reduce(r, "ReduceMin", Red::Min);
  add_reduce(r, "ReduceProd", Red::Prod);
  add_reduce(r, "ReduceL1", Red::L1);
  add_reduce(r, "ReduceL2", Red::L2);
  add_reduce(r, "ReduceLogSum", Red::LogSum);
  add_reduce(r, "ReduceLogSumExp", Red::LogSumExp);
  add_reduce(r, "ReduceSumSquare", Red::SumSquare);
  add<Pad>(r, "Pad");
  add<OneHot>(r, "OneHot");
  add<NonZero>(r, "NonZero");
  add<CumSum>(r, "CumSum");
  add<Resize>(r, "Resize");
}

}  // namespace flock
