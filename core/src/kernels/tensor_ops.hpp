// Internal to the tensor kernels (tensor_*.cpp): the helpers every family shares and the family
// registrations, which register_tensor_kernels (tensor_ops.cpp) calls.
#pragma once

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
#include "kernel_io.hpp"

namespace flock {
namespace tensor_ops {

using kernels::has_input;
using kernels::input;
using kernels::optional_input;
using kernels::product;
using kernels::set_out;
using kernels::shape_str;

// True when the node's opset is at least `v`; opset 0 means the newest.
inline bool at_least(int64_t opset, int64_t v) { return opset == 0 || opset >= v; }

// Compile time: the node names at least `n` inputs and the first `n` are not omitted.
inline void need_inputs(const KernelContext& ctx, int n, const std::string& where) {
  bool ok = ctx.node.input_size() >= n;
  for (int k = 0; ok && k < n; ++k) ok = !ctx.node.input(k).empty();
  if (!ok)
    fail(ErrorCode::InvalidModel,
         fmt::format("{}: needs {} input{}, has {}", where, n, n == 1 ? "" : "s", ctx.node.input_size()));
}

// Row-major element strides of a shape.
inline std::vector<int64_t> strides_of(const std::vector<int64_t>& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t k = s.size(); k-- > 1;) st[k - 1] = st[k] * s[k];
  return st;
}

// Ceiling on the elements one kernel output may hold; guards shapes computed from input values
// (ConstantOfShape, Expand, Tile, Range, Pad) before anything is allocated — the output, and the
// per-axis index maps some kernels build first, which are as long as the output's axes.
constexpr int64_t kMaxOutputElements = int64_t(1) << 31;

// Validates an output shape: no negative dimension, no overflow (also of its non-zero dimensions: a
// shape like [0, 2^40] holds nothing but its axis maps would be huge), under the ceiling and under
// the run's tensor limit (flock.max_tensor_elements), which the allocation would enforce anyway but
// only after the axis maps were built.
inline int64_t checked_output_numel(const std::vector<int64_t>& s, const std::string& where) {
  for (int64_t d : s) {
    if (d < 0)
      fail(ErrorCode::InvalidInput, fmt::format("{}: output shape {} has a negative dimension", where, shape_str(s)));
  }
  const int64_t ceiling = std::min(kMaxOutputElements, TensorLimitScope::current());
  int64_t nonzero = 1;
  for (int64_t d : s) {
    if (d == 0) continue;
    if (nonzero > ceiling / d)
      fail(ErrorCode::LimitExceeded,
           fmt::format("{}: output shape {} holds more than {} elements", where, shape_str(s), ceiling),
           ceiling < kMaxOutputElements
               ? "Raise flock.max_tensor_elements if the model is meant to compute tensors this large."
               : "");
    nonzero *= d;
  }
  return std::find(s.begin(), s.end(), 0) != s.end() ? 0 : nonzero;
}

inline Tensor make_output(ElemType type, std::vector<int64_t> shape, const std::string& where) {
  checked_output_numel(shape, where);
  return Tensor(type, std::move(shape));
}

// Normalizes `axis` into [0, rank).
inline int64_t normalize_axis(int64_t axis, int64_t rank, const std::string& where) {
  if (axis < -rank || axis >= rank)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: axis {} is out of range for an input of rank {}", where, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

// Normalizes a list of axes into [0, rank), rejecting duplicates.
inline std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const std::string& where) {
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
inline void check_unique_attr(const std::vector<int64_t>& v, const std::string& where, const char* name) {
  for (size_t a = 0; a < v.size(); ++a)
    for (size_t b = a + 1; b < v.size(); ++b)
      if (v[a] == v[b])
        fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' {} repeats {}", where, name, shape_str(v), v[a]));
}

// Element-type errors are properties of the graph, not of the values: an element type the operator
// does not run is UnsupportedOperator, inputs whose types must agree and do not are InvalidModel (so
// the trial run at load reports both). Shapes and values that do not fit are InvalidInput.

// An int64 (or narrower integer) 1-D input, as a list.
inline const std::vector<int64_t>& int_list(const Tensor& t, const std::string& where, const char* name) {
  if (t.type != ElemType::Int64)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: input '{}' has element type {}; expected int64", where, name, to_string(t.type)));
  if (t.shape.size() > 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' has shape {}; expected a 1-D tensor", where, name, shape_str(t.shape)));
  return t.i;
}

// An int64 input holding exactly one value (a scalar or a 1-element 1-D tensor).
inline int64_t int_scalar(const Tensor& t, const std::string& where, const char* name) {
  if (t.type != ElemType::Int64)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: input '{}' has element type {}; expected int64", where, name, to_string(t.type)));
  if (t.shape.size() > 1 || t.i.size() != 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' has shape {}; expected a single value", where, name, shape_str(t.shape)));
  return t.i[0];
}

inline void require_numeric(const Tensor& t, const std::string& where, const char* name) {
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
inline void gather_mapped(const Tensor& x, Tensor& y, const AxisMaps& maps, const Tensor* fill = nullptr) {
  visit2(x, y, [&](const auto& src, auto& dst) {
    using V = std::decay_t<decltype(dst)>;
    const typename V::value_type fv = fill ? storage_as<V>(*fill)[0] : typename V::value_type{};
    for_each_mapped(y.shape, maps, [&](int64_t k, int64_t off) {
      dst[static_cast<size_t>(k)] = off < 0 ? fv : src[static_cast<size_t>(off)];
    });
  });
}

// Integer arithmetic that wraps like the two's-complement hardware (Reduce, CumSum).
inline int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
inline int64_t wrap_mul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}
inline int64_t wrap_abs(int64_t a) { return a < 0 ? static_cast<int64_t>(0 - static_cast<uint64_t>(a)) : a; }

// x86 cvttsd2si semantics for a double that does not fit.
inline int64_t to_int64(double v) {
  if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

template <typename K>
void add(KernelRegistry& r, const char* op) {
  r.add("", op, [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<K>(ctx); });
}

void register_indexing_kernels(KernelRegistry& r);    // Gather, GatherElements, OneHot, NonZero
void register_shape_kernels(KernelRegistry& r);       // Split, Transpose, (Un)Squeeze, Shape, Size, ConstantOfShape,
                                                      // Expand, Tile, Range
void register_slice_pad_kernels(KernelRegistry& r);   // Slice, Pad
void register_reduction_kernels(KernelRegistry& r);   // the Reduce family, TopK, CumSum
void register_resize_kernels(KernelRegistry& r);      // Resize

}  // namespace tensor_ops
}  // namespace flock
