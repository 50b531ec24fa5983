// Internal to core/src/optimize/: what the passes read of a compiled model — its single vector
// input and, for a tree ensemble, the thresholds and leaf values as the kernel sees them for that
// input's type.
#pragma once

#include <cstdint>
#include <optional>

#include "../kernels/ml_tree.hpp"
#include "../model_internals.hpp"
#include "value_range.hpp"

namespace flock::optimize::detail {

// The model's single vector input, when it has one the passes understand (float, double or
// int64, a fixed number of columns).
struct VectorInput {
  int slot = -1;
  ElemType type = ElemType::Float;
  int64_t width = 0;
  Domain domain() const { return type == ElemType::Double ? Domain::Double : Domain::Float; }
};

inline std::optional<VectorInput> vector_input(const Model& model, const ModelInternals::GraphView& g) {
  const auto& inputs = model.signature().inputs;
  if (inputs.size() != 1 || g.input_slots.size() != 1) return std::nullopt;
  const InputSpec& spec = inputs[0];
  if (spec.width < 0) return std::nullopt;
  if (spec.type != ElemType::Float && spec.type != ElemType::Double && spec.type != ElemType::Int64)
    return std::nullopt;
  return VectorInput{g.input_slots[0], spec.type, spec.width};
}

// A node's threshold (branch) or single-target value (leaf) as the kernel reads it for input in
// `domain` (ml_tree_walk.hpp's with_input: double input walks the double nodes, derived from the
// float ones when the ensemble has none; float and int64 input walk the float nodes).
struct NodeValues {
  const tree::Ensemble& e;
  Domain domain;
  double operator()(size_t i) const {
    if (domain == Domain::Double && !e.nodes_d.empty()) return e.nodes_d[i].threshold;
    return static_cast<double>(e.nodes_f[i].threshold);
  }
};

}  // namespace flock::optimize::detail
