// Whether a graph computes each output row from the same row of its inputs alone, so that a large
// batch can run as chunks of rows that stay in cache between the nodes (Plan::run). Conservative:
// only operators whose row independence follows from their attributes and constant operands.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"

namespace flock::detail {

// `constant(name)`: the value of an initializer or Constant node, nullptr for anything else.
// `input_ranks`: per graph input that is not an initializer, its declared rank (-1: not declared).
bool rows_independent(const onnx::GraphProto& graph, const std::map<std::string, int64_t>& opsets,
                      const std::function<const Tensor*(const std::string&)>& constant,
                      const std::map<std::string, int>& input_ranks);

}  // namespace flock::detail
