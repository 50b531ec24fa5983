// flock.trace: everything one prediction went through — the input values as the model saw them,
// every graph node's outputs, every tree's path — from the model's own run, so it cannot differ
// from what predict returns for the same row.
#pragma once

#include <cstdint>
#include <string>

#include "flock/model.hpp"

namespace flock {

// Default of the number of values a trace lists (flock.trace's max_values).
constexpr int64_t kDefaultTraceMaxValues = 10000;

struct TraceOptions {
  // Values listed across intermediate tensors and tree branches; past it they are left out and the
  // trace says so ("truncated"). The input features, final outputs and prediction are always whole.
  int64_t max_values = kDefaultTraceMaxValues;
};

// The trace of a batch of one row as JSON text:
//   features:   [{name, input, value}] — after conversion to the input's type; null = missing
//   steps:      per graph node in run order: {step, node, op inputs, outputs: [{name, type, shape,
//               values[, truncated]}]}; tree ensembles add trees: [{tree, path: [{node, feature,
//               [feature_name,] mode, threshold, value, missing, branch, next}], leaf, value |
//               weights}] and aggregation {aggregate, post_transform, base_values, leaf_sums}
//   outputs:    the graph's outputs, whole
//   prediction: what predict / predict_label / predict_proba return ({value, label, proba}), or
//               {error} when predict would refuse this model (then use the outputs)
//   max_values, truncated
// Numbers that are not finite are the strings "NaN", "Infinity", "-Infinity". Throws flock::Error
// as Model::run does; InvalidInput when the batch does not hold exactly one row.
std::string trace_json(const Model& model, const FeatureBatch& row, const TraceOptions& options = {});

}  // namespace flock
