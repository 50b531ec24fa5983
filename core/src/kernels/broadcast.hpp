// Helpers shared by the default-domain kernels (standard.cpp, elementwise.cpp): element-type sets
// and dispatch, and numpy broadcasting (checked input access is kernel_io.hpp's).
//
// Broadcasting has one implementation for every elementwise operator with two or three operands:
// a fast path for operands of the output's own size (contiguous) or of one element (scalar), and a
// general strided path that first merges adjacent dimensions that need no index arithmetic, then runs
// a tight inner loop over the last merged dimension. The per-element operation is a template argument
// (a lambda or functor, inlined): no allocation and no virtual call per element.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "flock/checked.hpp"
#include "flock/kernel.hpp"
#include "kernel_io.hpp"

namespace flock::kernels {

// Normalizes `axis` into [0, rank) (or [0, rank] when `inclusive`).
inline int64_t normalize_axis(int64_t axis, int64_t rank, bool inclusive, const std::string& where) {
  const int64_t hi = inclusive ? rank : rank - 1;
  if (axis < -rank || axis > hi)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: axis {} is out of range for an input of rank {}", where, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

// ---- element types ----

// The storage vector of a tensor for C++ element type T (uint8_t is Bool, std::string is String).
template <typename T>
std::vector<T>& data_of(Tensor& t) {
  if constexpr (std::is_same_v<T, float>) return t.f;
  else if constexpr (std::is_same_v<T, double>) return t.d;
  else if constexpr (std::is_same_v<T, int64_t>) return t.i;
  else if constexpr (std::is_same_v<T, uint8_t>) return t.b;
  else {
    static_assert(std::is_same_v<T, std::string>, "no tensor storage for this type");
    return t.s;
  }
}

template <typename T>
const std::vector<T>& data_of(const Tensor& t) {
  return data_of<T>(const_cast<Tensor&>(t));
}

// The ElemType of C++ type T; bool (a computed truth value) is stored as Bool.
template <typename T>
constexpr ElemType elem_type_of() {
  if constexpr (std::is_same_v<T, float>) return ElemType::Float;
  else if constexpr (std::is_same_v<T, double>) return ElemType::Double;
  else if constexpr (std::is_same_v<T, int64_t>) return ElemType::Int64;
  else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, bool>) return ElemType::Bool;
  else {
    static_assert(std::is_same_v<T, std::string>, "no ElemType for this type");
    return ElemType::String;
  }
}

// The storage type for a computed value of type T (bool is stored as uint8_t).
template <typename T>
using stored_t = std::conditional_t<std::is_same_v<T, bool>, uint8_t, T>;

// Calls f(std::type_identity<T>{}) with the C++ storage type of `t`.
template <typename F>
decltype(auto) dispatch(ElemType t, F&& f) {
  switch (t) {
    case ElemType::Float: return f(std::type_identity<float>{});
    case ElemType::Double: return f(std::type_identity<double>{});
    case ElemType::Int64: return f(std::type_identity<int64_t>{});
    case ElemType::Bool: return f(std::type_identity<uint8_t>{});
    case ElemType::String: break;
  }
  return f(std::type_identity<std::string>{});
}

// A set of element types, as bits.
using TypeSet = unsigned;
constexpr TypeSet type_bit(ElemType t) { return 1u << static_cast<unsigned>(t); }
constexpr TypeSet kFloat = type_bit(ElemType::Float);
constexpr TypeSet kDouble = type_bit(ElemType::Double);
constexpr TypeSet kInt64 = type_bit(ElemType::Int64);
constexpr TypeSet kBool = type_bit(ElemType::Bool);
constexpr TypeSet kString = type_bit(ElemType::String);
constexpr TypeSet kFloats = kFloat | kDouble;
constexpr TypeSet kNumeric = kFloats | kInt64;
constexpr TypeSet kAllTypes = kNumeric | kBool | kString;

template <typename T>
constexpr bool in_set(TypeSet s) {
  return (s & type_bit(elem_type_of<T>())) != 0;
}

// "float, double or int64"
inline std::string describe(TypeSet s) {
  std::vector<std::string> names;
  for (ElemType t : {ElemType::Float, ElemType::Double, ElemType::Int64, ElemType::Bool, ElemType::String})
    if (s & type_bit(t)) names.emplace_back(to_string(t));
  if (names.empty()) return "none";
  if (names.size() == 1) return names[0];
  std::string last = names.back();
  names.pop_back();
  return fmt::format("{} or {}", fmt::join(names, ", "), last);
}

// An element type the operator does not run is an unsupported form of the operator.
inline void require_type(const std::string& where, ElemType t, TypeSet allowed, const char* what = "element type") {
  if (!(allowed & type_bit(t)))
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: {} {} is not supported; expected {}", where, what, to_string(t), describe(allowed)));
}

inline void require_same_type(const std::string& where, const Tensor& a, const Tensor& b, size_t ia, size_t ib) {
  if (a.type != b.type)
    fail(ErrorCode::InvalidInput, fmt::format("{}: inputs {} and {} have element types {} and {}; they must match",
                                              where, ia, ib, to_string(a.type), to_string(b.type)));
}

// ---- broadcasting ----

// numpy broadcasting of two shapes; false when they do not broadcast.
inline bool broadcast_shape(const std::vector<int64_t>& a, const std::vector<int64_t>& b, std::vector<int64_t>& out) {
  const size_t r = std::max(a.size(), b.size());
  out.assign(r, 1);
  for (size_t k = 0; k < r; ++k) {
    const int64_t da = k < r - a.size() ? 1 : a[k - (r - a.size())];
    const int64_t db = k < r - b.size() ? 1 : b[k - (r - b.size())];
    if (da == db || db == 1) out[k] = da;
    else if (da == 1) out[k] = db;
    else return false;
  }
  return true;
}

// The numpy broadcast of several shapes; InvalidInput naming the first dimension that does not fit.
inline std::vector<int64_t> broadcast_shapes(const std::string& where, const std::vector<const std::vector<int64_t>*>& shapes) {
  size_t r = 0;
  for (const auto* s : shapes) r = std::max(r, s->size());
  std::vector<int64_t> out(r, 1);
  for (size_t k = 0; k < r; ++k) {
    for (const auto* s : shapes) {
      if (k < r - s->size()) continue;
      const int64_t d = (*s)[k - (r - s->size())];
      if (d == 1 || d == out[k]) continue;
      if (out[k] == 1) {
        out[k] = d;
        continue;
      }
      std::vector<std::string> texts;
      for (const auto* t : shapes) texts.push_back(shape_str(*t));
      const std::string last = texts.back();
      texts.pop_back();
      fail(ErrorCode::InvalidInput,
           fmt::format("{}: shapes {} and {} do not broadcast: dimension {} (counted from the end) has sizes {} and {}",
                       where, fmt::join(texts, ", "), last, static_cast<int64_t>(k) - static_cast<int64_t>(r),
                       out[k], d));
    }
  }
  return out;
}

// Element strides of `s` aligned to an output of rank `r` (0 on broadcast dimensions).
inline std::vector<int64_t> aligned_strides(const std::vector<int64_t>& s, size_t r) {
  std::vector<int64_t> st(r, 0);
  int64_t acc = 1;
  for (size_t k = s.size(); k-- > 0;) {
    const size_t o = k + (r - s.size());
    st[o] = s[k] == 1 ? 0 : acc;
    acc *= s[k];
  }
  return st;
}

// N operands broadcast to an output, with adjacent dimensions merged where every operand walks them
// as one (contiguous, or broadcast along both). Output dimensions of size 1 are dropped.
template <size_t N>
struct StridedPlan {
  std::vector<int64_t> dims;                     // outer → inner; empty for a one-element output
  std::array<std::vector<int64_t>, N> strides;   // per operand, per merged dimension
};

template <size_t N>
StridedPlan<N> make_plan(const std::array<const std::vector<int64_t>*, N>& shapes, const std::vector<int64_t>& out) {
  const size_t r = out.size();
  std::array<std::vector<int64_t>, N> st;
  for (size_t i = 0; i < N; ++i) st[i] = aligned_strides(*shapes[i], r);
  StridedPlan<N> p;
  for (size_t d = 0; d < r; ++d) {
    if (out[d] == 1) continue;
    bool merge = !p.dims.empty();
    for (size_t i = 0; merge && i < N; ++i) merge = p.strides[i].back() == st[i][d] * out[d];
    if (merge) {
      p.dims.back() *= out[d];
      for (size_t i = 0; i < N; ++i) p.strides[i].back() = st[i][d];
    } else {
      p.dims.push_back(out[d]);
      for (size_t i = 0; i < N; ++i) p.strides[i].push_back(st[i][d]);
    }
  }
  return p;
}

// Calls row(out_offset, operand_offsets) for every index of the plan's outer dimensions (all but the
// last); the row is p.dims.back() elements long. The plan must have at least one dimension.
template <size_t N, typename F>
void for_each_row(const StridedPlan<N>& p, F&& row) {
  const size_t outer = p.dims.size() - 1;
  const int64_t len = p.dims.back();
  const int64_t rows = product(p.dims, 0, outer);
  std::vector<int64_t> idx(outer, 0);
  std::array<int64_t, N> off{};
  for (int64_t r = 0; r < rows; ++r) {
    row(r * len, off);
    for (size_t d = outer; d-- > 0;) {
      ++idx[d];
      for (size_t i = 0; i < N; ++i) off[i] += p.strides[i][d];
      if (idx[d] < p.dims[d]) break;
      for (size_t i = 0; i < N; ++i) off[i] -= p.strides[i][d] * p.dims[d];
      idx[d] = 0;
    }
  }
}

// y[k] = f(a[ia], b[ib]) over the broadcast output shape `sy` (which must be the broadcast of `sa`
// and `sb`). `y` may alias `a` when `sa` == `sy`.
template <typename A, typename B, typename Y, typename F>
void broadcast_binary(const A* a, const std::vector<int64_t>& sa, const B* b, const std::vector<int64_t>& sb, Y* y,
                      const std::vector<int64_t>& sy, F&& f) {
  const int64_t n = product(sy);
  if (n == 0) return;
  const int64_t na = product(sa), nb = product(sb);
  if (na == n && nb == n) {
    for (int64_t k = 0; k < n; ++k) y[k] = f(a[k], b[k]);
    return;
  }
  if (na == n && nb == 1) {
    const B bv = b[0];
    for (int64_t k = 0; k < n; ++k) y[k] = f(a[k], bv);
    return;
  }
  if (na == 1 && nb == n) {
    const A av = a[0];
    for (int64_t k = 0; k < n; ++k) y[k] = f(av, b[k]);
    return;
  }
  const StridedPlan<2> p = make_plan<2>({&sa, &sb}, sy);
  const int64_t len = p.dims.back();
  const int64_t da = p.strides[0].back(), db = p.strides[1].back();
  for_each_row(p, [&](int64_t oy, const std::array<int64_t, 2>& off) {
    const A* pa = a + off[0];
    const B* pb = b + off[1];
    Y* py = y + oy;
    if (da == 1 && db == 1) {
      for (int64_t j = 0; j < len; ++j) py[j] = f(pa[j], pb[j]);
    } else if (da == 1 && db == 0) {
      const B bv = *pb;
      for (int64_t j = 0; j < len; ++j) py[j] = f(pa[j], bv);
    } else if (da == 0 && db == 1) {
      const A av = *pa;
      for (int64_t j = 0; j < len; ++j) py[j] = f(av, pb[j]);
    } else {
      for (int64_t j = 0; j < len; ++j) py[j] = f(pa[j * da], pb[j * db]);
    }
  });
}

// y[k] = f(a[ia], b[ib], c[ic]) over the broadcast output shape `sy`.
template <typename A, typename B, typename C, typename Y, typename F>
void broadcast_ternary(const A* a, const std::vector<int64_t>& sa, const B* b, const std::vector<int64_t>& sb,
                       const C* c, const std::vector<int64_t>& sc, Y* y, const std::vector<int64_t>& sy, F&& f) {
  const int64_t n = product(sy);
  if (n == 0) return;
  if (product(sa) == n && product(sb) == n && product(sc) == n) {
    for (int64_t k = 0; k < n; ++k) y[k] = f(a[k], b[k], c[k]);
    return;
  }
  const StridedPlan<3> p = make_plan<3>({&sa, &sb, &sc}, sy);
  const int64_t len = p.dims.back();
  const int64_t da = p.strides[0].back(), db = p.strides[1].back(), dc = p.strides[2].back();
  for_each_row(p, [&](int64_t oy, const std::array<int64_t, 3>& off) {
    const A* pa = a + off[0];
    const B* pb = b + off[1];
    const C* pc = c + off[2];
    Y* py = y + oy;
    if (da == 1 && db == 1 && dc == 1) {
      for (int64_t j = 0; j < len; ++j) py[j] = f(pa[j], pb[j], pc[j]);
    } else {
      for (int64_t j = 0; j < len; ++j) py[j] = f(pa[j * da], pb[j * db], pc[j * dc]);
    }
  });
}

}  // namespace flock::kernels
