// Format importers: every supported format becomes an ONNX ModelProto.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "flock/onnx.hpp"

namespace flock {

// Parses ONNX protobuf bytes; throws flock::Error(InvalidModel) on malformed bytes.
onnx::ModelProto import_onnx(std::span<const uint8_t> bytes);

// Refuses, as flock::Error(InvalidModel), what the onnx library's checker and shape inference would
// crash on: tensors whose data does not match their dims (or whose dims overflow), and zero or
// negative window sizes (strides, dilations, kernel_shape). import_onnx calls it first.
// Every text of the model that can reach SQL (names, labels, metadata, string attributes and
// tensors) is UTF-8; InvalidModel naming the first field that is not.
void require_utf8_text(const onnx::ModelProto& model);
void precheck_onnx_model(const onnx::ModelProto& model);

// Converts an XGBoost JSON model (gbtree booster; objectives reg:squarederror, reg:logistic,
// binary:logistic, multi:softprob, multi:softmax) into an ONNX-ML model with one float input
// "input" of shape [N, num_feature], feature names in metadata_props "feature_names" (JSON array)
// when the model has them, and outputs:
//   regressors:  "variable" tensor(float) [N, 1]
//   classifiers: "label" tensor(int64) [N], "probabilities" tensor(float) [N, C]
// Throws flock::Error(InvalidModel) for malformed JSON, UnsupportedOperator for other boosters or
// objectives, naming them.
onnx::ModelProto import_xgboost_json(std::span<const uint8_t> bytes);

// Reads feature names from ONNX metadata_props "feature_names" (JSON array or comma-separated).
std::vector<std::string> feature_names_from_metadata(const onnx::ModelProto& model);

}  // namespace flock
