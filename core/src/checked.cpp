#include "flock/checked.hpp"

#include <fmt/format.h>

namespace flock {

namespace {
std::string dims_text(std::span<const int64_t> dims) { return fmt::format("[{}]", fmt::join(dims, ", ")); }
}  // namespace

namespace detail {

void fail_overflow(ErrorCode code, std::string_view what, int64_t a, int64_t b, const char* op) {
  fail(code, fmt::format("{}: {} {} {} overflows a 64-bit size", what, a, op, b),
       "A dimension or size in the model or its input is far too large.");
}

void fail_negative_dim(ErrorCode code, std::string_view what, std::span<const int64_t> dims) {
  fail(code, fmt::format("{}: shape {} has a negative dimension", what, dims_text(dims)));
}

void fail_dims_overflow(ErrorCode code, std::string_view what, std::span<const int64_t> dims) {
  fail(code, fmt::format("{}: shape {} has more elements than fit in a 64-bit size", what, dims_text(dims)),
       "A dimension in the model or its input is far too large.");
}

}  // namespace detail

int64_t normalize_axis_checked(int64_t axis, int64_t rank, std::string_view where, bool inclusive) {
  const int64_t hi = inclusive ? rank : rank - 1;
  const int64_t lo = inclusive ? -rank - 1 : -rank;
  if (axis < lo || axis > hi)
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: axis {} is out of range for an input of rank {}", where, axis, rank));
  return axis < 0 ? axis + (inclusive ? rank + 1 : rank) : axis;
}

void check_indices(const int64_t* begin, const int64_t* end, int64_t n, std::string_view where, int64_t axis,
                   bool allow_negative) {
  const int64_t lo = allow_negative ? -n : 0;
  for (const int64_t* p = begin; p != end; ++p) {
    if (*p < lo || *p >= n) [[unlikely]]
      fail(ErrorCode::InvalidInput, fmt::format("{}: index {} is out of range for axis {} of size {} (at position {})",
                                                where, *p, axis, n, p - begin));
  }
}

}  // namespace flock
