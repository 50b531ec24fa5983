// Checked size arithmetic. Shapes come from model bytes and input values, so every product or sum
// of dimensions, and every element count turned into an allocation, goes through these: overflow is
// a flock::Error naming what was being computed, never a wrap-around (which would let a huge
// declared shape pass a size check and index past a small buffer).
//
// The checks cost one overflow flag per operation; use them when computing a shape or a size, once
// per tensor, not inside per-element loops.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "flock/error.hpp"

namespace flock {

namespace detail {
[[noreturn]] void fail_overflow(ErrorCode code, std::string_view what, int64_t a, int64_t b, const char* op);
[[noreturn]] void fail_negative_dim(ErrorCode code, std::string_view what, std::span<const int64_t> dims);
[[noreturn]] void fail_dims_overflow(ErrorCode code, std::string_view what, std::span<const int64_t> dims);
}  // namespace detail

// a * b; `what` names the quantity for the error ("Tile output size").
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what, ErrorCode code = ErrorCode::LimitExceeded) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) [[unlikely]]
    detail::fail_overflow(code, what, a, b, "*");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, std::string_view what, ErrorCode code = ErrorCode::LimitExceeded) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) [[unlikely]]
    detail::fail_overflow(code, what, a, b, "+");
  return r;
}

inline int64_t checked_sub(int64_t a, int64_t b, std::string_view what, ErrorCode code = ErrorCode::LimitExceeded) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) [[unlikely]]
    detail::fail_overflow(code, what, a, b, "-");
  return r;
}

// The number of elements of a shape: its dimensions must be >= 0 and the product of its non-zero
// dimensions must fit in int64, so that the product of any sub-range of them does too (kernels take
// such products for outer / inner strides without checking again). 1 for a scalar.
inline int64_t checked_numel(std::span<const int64_t> dims, std::string_view what,
                             ErrorCode code = ErrorCode::LimitExceeded) {
  int64_t n = 1;
  bool zero = false;
  for (int64_t d : dims) {
    if (d <= 0) [[unlikely]] {
      if (d < 0) detail::fail_negative_dim(code, what, dims);
      zero = true;
      continue;
    }
    if (__builtin_mul_overflow(n, d, &n)) [[unlikely]]
      detail::fail_dims_overflow(code, what, dims);
  }
  return zero ? 0 : n;
}

// Bytes of `count` elements of `elem_size` bytes, as size_t (count must be >= 0).
inline size_t checked_bytes(int64_t count, size_t elem_size, std::string_view what,
                            ErrorCode code = ErrorCode::LimitExceeded) {
  size_t r;
  if (count < 0 || __builtin_mul_overflow(static_cast<size_t>(count), elem_size, &r)) [[unlikely]]
    detail::fail_overflow(code, what, count, static_cast<int64_t>(elem_size), "*");
  return r;
}

// Normalizes an axis into [0, rank) (or [0, rank] when `inclusive`, for Unsqueeze-like insertion
// points); out of range is InvalidInput naming `where` (the operator).
int64_t normalize_axis_checked(int64_t axis, int64_t rank, std::string_view where, bool inclusive = false);

// Checks that every index in [begin, end) lies in [-n, n) (negative indices count from the end) or,
// when `allow_negative` is false, in [0, n): InvalidInput naming the operator, the index, the axis
// of size n it indexes and its position. One pass before the kernel's loop, as ONNX Runtime does, so
// the loop itself reads without checks.
void check_indices(const int64_t* begin, const int64_t* end, int64_t n, std::string_view where, int64_t axis,
                   bool allow_negative = true);

}  // namespace flock
