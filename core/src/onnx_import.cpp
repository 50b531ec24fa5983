#include <fmt/format.h>
#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "flock/error.hpp"
#include "flock/importers.hpp"

namespace flock {

namespace {

// The library's shape inference (error mode 0, below) passes over a node whose inference fails,
// tolerating its own gaps. The nodes of the schemas Flock wrote (onnx_schemas.cpp) must not get
// that tolerance: their inference is what checks their attributes and types, so a failure there
// refuses the model. Errors come back one line per node, "(op_type:Op, node name: n): ..." (or
// "(op_type:Op): ..." for a node without a name).
void require_own_inference(const onnx::ModelProto& model, const std::set<std::string>& own_schemas) {
  try {
    onnx::ModelProto inferred = model;
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*error_mode=*/1));
  } catch (const std::exception& e) {
    std::istringstream lines(e.what());
    for (std::string line; std::getline(lines, line);) {
      for (const std::string& op : own_schemas) {
        const std::string tag = "(op_type:" + op;
        const auto at = line.find(tag);
        const size_t next = at + tag.size();
        if (at == std::string::npos || next >= line.size() || (line[next] != ',' && line[next] != ')')) continue;
        fail(ErrorCode::InvalidModel, fmt::format("ONNX model's types or shapes are inconsistent: {}", line.substr(at)),
             "An attribute, input or output of this operator contradicts its specification; re-export the model.");
      }
    }
  }
}

}  // namespace

onnx::ModelProto import_onnx(std::span<const uint8_t> bytes) {
  onnx::ModelProto model;
  if (bytes.empty()) fail(ErrorCode::InvalidModel, "model is empty (0 bytes)");
  if (bytes.size() > static_cast<size_t>(INT32_MAX))
    fail(ErrorCode::LimitExceeded, "ONNX model is larger than 2 GiB, the protobuf limit");
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    fail(ErrorCode::InvalidModel,
         fmt::format("model bytes are not a valid ONNX protobuf ({} bytes; truncated or not ONNX)", bytes.size()),
         "Pass the bytes of an .onnx file, or an XGBoost JSON model, unchanged.");
  if (!model.has_graph())
    fail(ErrorCode::InvalidModel, "ONNX model has no graph", "Pass the bytes of an .onnx file unchanged.");
  // Before the onnx library sees the model: its checker and shape inference trust what these check.
  require_utf8_text(model);
  precheck_onnx_model(model);
  const std::set<std::string> own_schemas = check_operator_versions(model);
  // libonnx 1.12 refuses IR versions past its own (8); IR 9 and 10 add only element types that
  // its checker refuses anyway. The model is checked as IR 8, and keeps its version.
  const int64_t ir_version = model.ir_version();
  if (ir_version > kLibraryIrVersion) model.set_ir_version(kLibraryIrVersion);
  struct RestoreIr {
    onnx::ModelProto& model;
    int64_t version;
    ~RestoreIr() { model.set_ir_version(version); }
  } restore_ir{model, ir_version};
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string what = e.what();
    // The checker appends a "==> Context: ..." trailer; keep the first line, it names the problem.
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    fail(ErrorCode::InvalidModel, fmt::format("ONNX model fails validation: {}", what),
         fmt::format("The ONNX checker rejects this model; Flock loads ai.onnx opsets {} to {} and ai.onnx.ml "
                     "opsets 1 to {}.",
                     kMinOnnxOpset, kMaxOnnxOpset, kMaxMlOpset));
  }
  if (!own_schemas.empty()) require_own_inference(model, own_schemas);
  try {
    // Types and shapes must agree with what the operators infer. Node-level inference gaps (e.g.
    // ZipMap's map outputs in this onnx version) are tolerated; contradictions are not.
    onnx::ModelProto inferred = model;
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*error_mode=*/0));
  } catch (const std::exception& e) {
    std::string what = e.what();
    // onnx 1.12 cannot merge sequence/map types (onnx/onnx#5188): a gap in the library, not in
    // the model. Everything before such a node has been checked.
    if (what.find("type case unsupported for symbolic shape inference") != std::string::npos) return model;
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    fail(ErrorCode::InvalidModel, fmt::format("ONNX model's types or shapes are inconsistent: {}", what),
         "A declared input, output or value type contradicts what its operators produce; re-export the model.");
  }
  return model;
}

std::vector<std::string> feature_names_from_metadata(const onnx::ModelProto& model) {
  for (const auto& prop : model.metadata_props()) {
    if (prop.key() != "feature_names") continue;
    const std::string& v = prop.value();
    std::vector<std::string> names;
    auto first = v.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && v[first] == '[') {
      nlohmann::json j = nlohmann::json::parse(v, nullptr, /*allow_exceptions=*/false);
      if (!j.is_array())
        fail(ErrorCode::InvalidModel, "ONNX metadata 'feature_names' is not a valid JSON array of strings");
      for (const auto& e : j) {
        if (!e.is_string())
          fail(ErrorCode::InvalidModel, "ONNX metadata 'feature_names' is not a valid JSON array of strings");
        names.push_back(e.get<std::string>());
      }
    } else {
      size_t start = 0;
      while (start <= v.size()) {
        size_t comma = v.find(',', start);
        std::string part = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        auto b = part.find_first_not_of(" \t");
        auto e = part.find_last_not_of(" \t");
        names.push_back(b == std::string::npos ? std::string() : part.substr(b, e - b + 1));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    return names;
  }
  return {};
}

}  // namespace flock
