// Internal to the kernels (core/src/kernels/*): checked access to a kernel's inputs and outputs, and
// the shape helpers every family's error messages and size checks use. One definition for all
// families, so an input is checked, and a missing one reported, the same way by every operator.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "flock/checked.hpp"
#include "flock/kernel.hpp"

namespace flock::kernels {

// Input k, which must be present and hold as many values as its shape says.
inline const Tensor& input(const std::vector<const Tensor*>& in, size_t k, const std::string& where,
                           const char* name) {
  if (k >= in.size() || in[k] == nullptr)
    fail(ErrorCode::InvalidInput, fmt::format("{}: input {} ('{}') is missing", where, k, name));
  const Tensor& t = *in[k];
  if (static_cast<int64_t>(t.size()) != t.numel())
    fail(ErrorCode::InvalidInput,
         fmt::format("{}: input '{}' holds {} values but its shape needs {}", where, name, t.size(), t.numel()));
  return t;
}

// Input k, or nullptr for an omitted optional input.
inline const Tensor* optional_input(const std::vector<const Tensor*>& in, size_t k, const std::string& where,
                                    const char* name) {
  if (k >= in.size() || in[k] == nullptr) return nullptr;
  return &input(in, k, where, name);
}

// Compile time: whether optional input `k` is named (an omitted one is absent or named "").
inline bool has_input(const KernelContext& ctx, int k) {
  return ctx.node.input_size() > k && !ctx.node.input(k).empty();
}

// Output k, when the node names that many outputs (a trailing optional output may be left off).
inline void set_out(std::vector<Tensor>& out, size_t k, Tensor t) {
  if (k < out.size()) out[k] = std::move(t);
}

// Product of dimensions [from, to) of a shape; checked, as shapes are often computed from input
// values (a broadcast, a Reshape's request) before anything is allocated for them.
inline int64_t product(const std::vector<int64_t>& s, size_t from, size_t to) {
  return checked_numel(std::span<const int64_t>(s.data() + from, to - from), "shape product",
                       ErrorCode::InvalidInput);
}

inline int64_t product(const std::vector<int64_t>& s) { return product(s, 0, s.size()); }

// "[2, 3]", for error messages.
inline std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace flock::kernels
