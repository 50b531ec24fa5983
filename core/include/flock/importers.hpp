// Format importers: every supported format becomes an ONNX ModelProto.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "flock/onnx.hpp"

namespace flock {

// The ONNX versions Flock loads: ai.onnx opsets 7-21, ai.onnx.ml 1-5, IR versions up to 10 (what
// onnx 1.16 writes). Debian's libonnx 1.12 knows ai.onnx 17 and ai.onnx.ml 3: the operators Flock
// runs that changed after those get schemas of Flock's own (onnx_schemas.cpp).
constexpr int64_t kMinOnnxOpset = 7;
constexpr int64_t kMaxOnnxOpset = 21;
constexpr int64_t kMaxMlOpset = 5;
constexpr int64_t kMaxIrVersion = 10;
// The IR version libonnx 1.12's checker reads; IR 9 and 10 add element types (float8, int4) Flock
// refuses and nothing else a graph of Flock's operators can hold.
constexpr int64_t kLibraryIrVersion = 8;
// The newest opsets libonnx 1.12 has schemas of.
constexpr int64_t kLibraryOnnxOpset = 17;
constexpr int64_t kLibraryMlOpset = 3;

// Registers (once) the onnx library schemas of the operator versions libonnx 1.12 predates that
// Flock runs (onnx_schemas.cpp).
void register_newer_onnx_schemas();

// Refuses, as UnsupportedOperator naming the operator and the version, a model whose opsets or IR
// version are outside what Flock loads, and any node whose operator Flock does not run at the
// model's opset (one that changed at a version Flock has no definition of, or unknown). Registers
// the newer schemas first. import_onnx calls it before the onnx library's checker. Returns the
// operator types of the model whose schema at its opset is one of Flock's (their inference must
// succeed).
std::set<std::string> check_operator_versions(const onnx::ModelProto& model);

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
