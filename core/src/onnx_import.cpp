#include <fmt/format.h>
#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "flock/error.hpp"
#include "flock/importers.hpp"
#include "flock/utf8.hpp"

namespace flock {

namespace {

// The first string field (protobuf `string`, not `bytes`) of the message tree that is not valid
// UTF-8, as "onnx.Message.field"; empty if none. proto2 does not check them at parse time, and the
// checker, error messages and the signature then carry such names on to SQL text. Protobuf's
// parser bounds message nesting (100 levels), so the recursion is bounded too.
std::string first_non_utf8_field(const google::protobuf::Message& message) {
  using google::protobuf::FieldDescriptor;
  const auto* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      if (field->is_repeated()) {
        for (int k = 0; k < reflection->FieldSize(message, field); ++k)
          if (!is_valid_utf8(reflection->GetRepeatedStringReference(message, field, k, nullptr)))
            return field->full_name();
      } else {
        std::string scratch;
        if (!is_valid_utf8(reflection->GetStringReference(message, field, &scratch))) return field->full_name();
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int k = 0; k < reflection->FieldSize(message, field); ++k)
          if (auto bad = first_non_utf8_field(reflection->GetRepeatedMessage(message, field, k)); !bad.empty())
            return bad;
      } else if (auto bad = first_non_utf8_field(reflection->GetMessage(message, field)); !bad.empty()) {
        return bad;
      }
    }
  }
  return {};
}

// Bytes per element of ONNX's fixed-size element types; 0 for STRING and unknown types.
size_t element_bytes(int32_t type) {
  using TP = onnx::TensorProto;
  switch (type) {
    case TP::BOOL: case TP::INT8: case TP::UINT8: return 1;
    case TP::INT16: case TP::UINT16: case TP::FLOAT16: case TP::BFLOAT16: return 2;
    case TP::FLOAT: case TP::INT32: case TP::UINT32: return 4;
    case TP::DOUBLE: case TP::INT64: case TP::UINT64: case TP::COMPLEX64: return 8;
    case TP::COMPLEX128: return 16;
    default: return 0;
  }
}

// Values the typed field for the tensor's element type holds, in elements (complex: pairs).
int64_t typed_values(const onnx::TensorProto& t) {
  using TP = onnx::TensorProto;
  switch (t.data_type()) {
    case TP::FLOAT: return t.float_data_size();
    case TP::COMPLEX64: return t.float_data_size() / 2;
    case TP::DOUBLE: return t.double_data_size();
    case TP::COMPLEX128: return t.double_data_size() / 2;
    case TP::INT64: return t.int64_data_size();
    case TP::UINT32: case TP::UINT64: return t.uint64_data_size();
    case TP::STRING: return t.string_data_size();
    default: return t.int32_data_size();  // the narrower integer types, bool, float16, bfloat16
  }
}

// A tensor stored in the model holds exactly the values its dims describe, and the dims multiply
// without overflow. libonnx's shape inference reads such tensors trusting both (an int64
// initializer with fewer raw bytes than its dims crashes it), and so would the kernels.
void check_tensor_data(const onnx::TensorProto& t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) fail(ErrorCode::InvalidModel, fmt::format("ONNX tensor '{}' has a negative dimension ({})", t.name(), d));
    if (__builtin_mul_overflow(n, d, &n))
      fail(ErrorCode::InvalidModel, fmt::format("ONNX tensor '{}': its dimensions multiply past 2^63", t.name()));
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL) return;  // refused later, with its own message
  if (t.has_raw_data()) {
    const size_t width = element_bytes(t.data_type());
    size_t expected = 0;
    if (width == 0 || __builtin_mul_overflow(static_cast<size_t>(n), width, &expected) ||
        t.raw_data().size() != expected)
      fail(ErrorCode::InvalidModel,
           fmt::format("ONNX tensor '{}' holds {} bytes of raw data; its type and {} elements need {}", t.name(),
                       t.raw_data().size(), n, width == 0 ? std::string("typed values, not raw bytes") : std::to_string(expected)));
  } else if (typed_values(t) != n) {
    fail(ErrorCode::InvalidModel,
         fmt::format("ONNX tensor '{}' holds {} values for {} elements", t.name(), typed_values(t), n));
  }
}

// Attribute values libonnx divides by or loops over without checking them (MaxPool with a zero
// stride raises SIGFPE in its shape inference): kernel sizes, strides and dilations are positive,
// pads are not negative.
void check_window_attributes(const onnx::NodeProto& node) {
  static const std::set<std::string> windowed = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool",
                                                 "AveragePool", "LpPool", "MaxUnpool", "MaxRoiPool", "Col2Im"};
  if (!node.domain().empty() && node.domain() != "ai.onnx") return;
  if (!windowed.count(node.op_type())) return;
  for (const auto& a : node.attribute()) {
    const bool positive = a.name() == "kernel_shape" || a.name() == "strides" || a.name() == "dilations";
    if (!positive && a.name() != "pads" && a.name() != "output_padding") continue;
    for (int64_t v : a.ints())
      if (positive ? v < 1 : v < 0)
        fail(ErrorCode::InvalidModel,
             fmt::format("ONNX node '{}' ({}): attribute {} has the value {}; it must be {}", node.name(), node.op_type(),
                         a.name(), v, positive ? "at least 1" : "0 or more"));
  }
}

// LayerNormalization's axis within the rank of its input, where the graph declares that rank
// (libonnx's shape inference indexes the input's dims with the unchecked axis).
void check_layer_norm_axis(const onnx::NodeProto& node, const std::unordered_map<std::string, int>& declared_rank) {
  if (node.op_type() != "LayerNormalization" || node.input_size() == 0) return;
  auto rank = declared_rank.find(node.input(0));
  if (rank == declared_rank.end()) return;
  for (const auto& a : node.attribute()) {
    if (a.name() != "axis") continue;
    const int64_t r = rank->second;
    if (a.i() < -r || a.i() >= r)
      fail(ErrorCode::InvalidModel,
           fmt::format("ONNX node '{}' (LayerNormalization): axis {} is out of range for its rank-{} input", node.name(), a.i(), r));
  }
}

// Checks of what libonnx's checker and shape inference take on trust, over the graph and every
// subgraph (If / Loop / Scan bodies). Recursion is bounded by protobuf's nesting limit.
void precheck_graph(const onnx::GraphProto& graph) {
  std::unordered_map<std::string, int> declared_rank;
  auto declare = [&](const onnx::ValueInfoProto& v) {
    if (v.type().has_tensor_type() && v.type().tensor_type().has_shape())
      declared_rank[v.name()] = v.type().tensor_type().shape().dim_size();
  };
  for (const auto& v : graph.input()) declare(v);
  for (const auto& v : graph.value_info()) declare(v);
  for (const auto& v : graph.output()) declare(v);
  for (const auto& t : graph.initializer()) {
    check_tensor_data(t);
    declared_rank[t.name()] = t.dims_size();
  }
  for (const auto& sparse : graph.sparse_initializer()) {
    check_tensor_data(sparse.values());
    check_tensor_data(sparse.indices());
  }
  for (const auto& node : graph.node()) {
    check_window_attributes(node);
    check_layer_norm_axis(node, declared_rank);
    for (const auto& a : node.attribute()) {
      if (a.has_t()) check_tensor_data(a.t());
      for (const auto& t : a.tensors()) check_tensor_data(t);
      if (a.has_sparse_tensor()) {
        check_tensor_data(a.sparse_tensor().values());
        check_tensor_data(a.sparse_tensor().indices());
      }
      if (a.has_g()) precheck_graph(a.g());
      for (const auto& g : a.graphs()) precheck_graph(g);
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
  if (auto field = first_non_utf8_field(model); !field.empty())
    fail(ErrorCode::InvalidModel, fmt::format("ONNX model's {} is not valid UTF-8", field),
         "ONNX string fields (names, producer, metadata) must be UTF-8; re-export the model.");
  precheck_graph(model.graph());
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string what = e.what();
    // The checker appends a "==> Context: ..." trailer; keep the first line, it names the problem.
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    fail(ErrorCode::InvalidModel, fmt::format("ONNX model fails validation: {}", what),
         "The ONNX checker rejects this model; re-export it with a supported opset (ai.onnx <= 17, ai.onnx.ml <= 3).");
  }
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
