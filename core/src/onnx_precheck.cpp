// Checks run on an untrusted ONNX model before the onnx library's checker and shape inference see
// it. Those read initializer data by their declared dims and divide by stride attributes without
// checking either: a 113-byte model with an int64 initializer shorter than its dims crashes them
// (SIGSEGV), a zero stride raises SIGFPE (issue 11, attack 3). What they would trip on is refused
// here, as a flock::Error, first.
#include <fmt/format.h>

#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "flock/checked.hpp"
#include "flock/importers.hpp"
#include "flock/utf8.hpp"

namespace flock {

namespace {

using TP = onnx::TensorProto;

// Deepest nesting of subgraphs (If / Loop bodies) the checks walk into.
constexpr int kMaxSubgraphDepth = 16;

[[noreturn]] void fail_too_deep() {
  fail(ErrorCode::InvalidModel, fmt::format("model nests subgraphs more than {} deep", kMaxSubgraphDepth));
}

// Bytes per element in raw_data; 0 for types without a fixed size (string) or unknown ones.
size_t raw_element_size(int32_t type) {
  switch (type) {
    case TP::FLOAT: case TP::INT32: case TP::UINT32: return 4;
    case TP::DOUBLE: case TP::INT64: case TP::UINT64: case TP::COMPLEX64: return 8;
    case TP::COMPLEX128: return 16;
    case TP::INT16: case TP::UINT16: case TP::FLOAT16: case TP::BFLOAT16: return 2;
    case TP::INT8: case TP::UINT8: case TP::BOOL: return 1;
    default: return 0;
  }
}

// Values the typed field of `type` holds for a tensor of n elements (complex: two per element).
int64_t typed_count(const TP& t) {
  switch (t.data_type()) {
    case TP::FLOAT: return t.float_data_size();
    case TP::COMPLEX64: return t.float_data_size() / 2;
    case TP::DOUBLE: return t.double_data_size();
    case TP::COMPLEX128: return t.double_data_size() / 2;
    case TP::INT64: return t.int64_data_size();
    case TP::UINT32: case TP::UINT64: return t.uint64_data_size();
    case TP::STRING: return t.string_data_size();
    default: return t.int32_data_size();  // int32, int16, int8, uint16, uint8, bool, float16, bfloat16
  }
}

void check_tensor(const TP& t, const std::string& owner) {
  const std::string what = fmt::format("tensor '{}'{}", t.name(), owner);
  if (t.data_location() == TP::EXTERNAL)
    fail(ErrorCode::InvalidModel, fmt::format("{} keeps its data in an external file", what),
         "Save the model with all tensors inside the file (no external data).");
  for (int64_t d : t.dims())
    if (d < 0) fail(ErrorCode::InvalidModel, fmt::format("{} has a negative dimension {}", what, d));
  const int64_t n = checked_numel(std::span<const int64_t>(t.dims().data(), static_cast<size_t>(t.dims_size())), what,
                                  ErrorCode::InvalidModel);
  if (t.has_raw_data()) {
    const size_t size = raw_element_size(t.data_type());
    if (size == 0) fail(ErrorCode::InvalidModel, fmt::format("{} of this element type cannot have raw_data", what));
    const size_t need = checked_bytes(n, size, what, ErrorCode::InvalidModel);
    if (t.raw_data().size() != need)
      fail(ErrorCode::InvalidModel,
           fmt::format("{} has {} bytes of raw_data; its shape needs {}", what, t.raw_data().size(), need));
    return;
  }
  const int64_t have = typed_count(t);
  if (have != n)
    fail(ErrorCode::InvalidModel, fmt::format("{} holds {} values; its shape needs {}", what, have, n));
}

bool is_window_op(const std::string& op) {
  for (const char* w : {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
                        "MaxUnpool", "MaxRoiPool", "GlobalLpPool", "DeformConv"})
    if (op == w) return true;
  return false;
}

// The ranks the graph declares for its values (inputs, outputs, value_info, initializers).
std::unordered_map<std::string, int> declared_ranks(const onnx::GraphProto& g) {
  std::unordered_map<std::string, int> ranks;
  auto declare = [&](const onnx::ValueInfoProto& v) {
    if (v.type().has_tensor_type() && v.type().tensor_type().has_shape())
      ranks[v.name()] = v.type().tensor_type().shape().dim_size();
  };
  for (const auto& v : g.input()) declare(v);
  for (const auto& v : g.value_info()) declare(v);
  for (const auto& v : g.output()) declare(v);
  for (const auto& t : g.initializer()) ranks[t.name()] = t.dims_size();
  return ranks;
}

// LayerNormalization's axis within the rank of its input, where the graph declares that rank
// (the library's shape inference indexes the input's dims with the unchecked axis).
void check_layer_norm_axis(const onnx::NodeProto& node, const std::string& owner,
                           const std::unordered_map<std::string, int>& ranks) {
  if (node.op_type() != "LayerNormalization" || node.input_size() == 0) return;
  auto rank = ranks.find(node.input(0));
  if (rank == ranks.end()) return;
  for (const auto& a : node.attribute())
    if (a.name() == "axis" && (a.i() < -rank->second || a.i() >= rank->second))
      fail(ErrorCode::InvalidModel, fmt::format("{}{}: axis {} is out of range for its rank-{} input", node.op_type(),
                                                owner, a.i(), rank->second));
}

void check_graph(const onnx::GraphProto& g, int depth) {
  if (depth > kMaxSubgraphDepth) fail_too_deep();
  for (const auto& init : g.initializer()) check_tensor(init, "");
  for (const auto& sparse : g.sparse_initializer()) {
    check_tensor(sparse.values(), " (sparse values)");
    check_tensor(sparse.indices(), " (sparse indices)");
  }
  const auto ranks = declared_ranks(g);
  for (const auto& node : g.node()) {
    const std::string owner = fmt::format(" in {} '{}'", node.op_type(), node.name());
    const bool window = is_window_op(node.op_type());
    check_layer_norm_axis(node, owner, ranks);
    for (const auto& a : node.attribute()) {
      if (a.has_t()) check_tensor(a.t(), owner);
      for (const auto& t : a.tensors()) check_tensor(t, owner);
      if (a.has_sparse_tensor()) {
        check_tensor(a.sparse_tensor().values(), owner);
        check_tensor(a.sparse_tensor().indices(), owner);
      }
      if (a.has_g()) check_graph(a.g(), depth + 1);
      for (const auto& sub : a.graphs()) check_graph(sub, depth + 1);
      if (window && (a.name() == "pads" || a.name() == "output_padding")) {
        for (int64_t v : a.ints())
          if (v < 0 || v > std::numeric_limits<int32_t>::max())
            fail(ErrorCode::InvalidModel, fmt::format("{}{}: {} has value {}; it must be in [0, 2^31)",
                                                      node.op_type(), owner, a.name(), v));
      }
      // Sizes of a sliding window: at least 1, or the library's shape inference divides by zero.
      if (window && (a.name() == "strides" || a.name() == "dilations" || a.name() == "kernel_shape")) {
        for (int64_t v : a.ints())
          if (v < 1 || v > std::numeric_limits<int32_t>::max())
            fail(ErrorCode::InvalidModel, fmt::format("{}{}: {} has value {}; it must be in [1, 2^31)",
                                                      node.op_type(), owner, a.name(), v));
      }
    }
  }
}

// The first `string` field (protobuf `string`, not `bytes`) of the message tree that is not valid
// UTF-8, as "onnx.Message.field"; empty if none. proto2 does not check them at parse time, and the
// onnx library's error messages, the signature and SQL text would carry them on. Protobuf's parser
// bounds message nesting (100 levels), so the recursion is bounded too.
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

[[noreturn]] void not_utf8(const std::string& what) {
  fail(ErrorCode::InvalidModel, fmt::format("ONNX model's {} is not valid UTF-8", what),
       "Text in a model (names, labels, metadata) must be UTF-8; re-export the model.");
}

// The `bytes` fields that hold text (string attributes such as class labels, string tensors), which
// flow into outputs and SQL text, in the graph and its subgraphs.
void check_text_bytes(const onnx::GraphProto& g, int depth) {
  if (depth > kMaxSubgraphDepth) fail_too_deep();
  auto check_tensor = [](const TP& t, const std::string& owner) {
    for (const auto& v : t.string_data())
      if (!is_valid_utf8(v)) not_utf8(fmt::format("string data of tensor '{}'{}", t.name(), owner));
  };
  for (const auto& init : g.initializer()) check_tensor(init, "");
  for (const auto& node : g.node()) {
    const std::string owner = fmt::format(" in {} '{}'", node.op_type(), node.name());
    for (const auto& a : node.attribute()) {
      if (!is_valid_utf8(a.s())) not_utf8(fmt::format("string attribute {}{}", a.name(), owner));
      for (const auto& v : a.strings())
        if (!is_valid_utf8(v)) not_utf8(fmt::format("string attribute {}{}", a.name(), owner));
      if (a.has_t()) check_tensor(a.t(), owner);
      for (const auto& t : a.tensors()) check_tensor(t, owner);
      if (a.has_g()) check_text_bytes(a.g(), depth + 1);
      for (const auto& sub : a.graphs()) check_text_bytes(sub, depth + 1);
    }
  }
}

}  // namespace

void require_utf8_text(const onnx::ModelProto& model) {
  if (auto field = first_non_utf8_field(model); !field.empty()) not_utf8(field);
  check_text_bytes(model.graph(), 0);
}

void precheck_onnx_model(const onnx::ModelProto& model) { check_graph(model.graph(), 0); }

}  // namespace flock
