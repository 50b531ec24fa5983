// Model::load on hostile ONNX bytes that libonnx's checker and shape inference take on trust (they
// crashed or misread them): each must be refused with a flock::Error before libonnx sees it. The
// same models are SQL regression tests in tests/pg/test_hostile_models.py; fuzzer finds live in
// tests/fuzz/crashers.
#include <gtest/gtest.h>

#include <string>

#include "flock/model.hpp"
#include "flock/onnx.hpp"

namespace {

using flock::ErrorCode;

onnx::ModelProto one_input_model(std::vector<int64_t> dims, int opset = 15) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("hostile_import_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  return m;
}

void add_output(onnx::ModelProto& m, const std::string& name, int rank) {
  auto* out = m.mutable_graph()->add_output();
  out->set_name(name);
  auto* tt = out->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  for (int k = 0; k < rank; ++k) shape->add_dim()->set_dim_param("d" + std::to_string(k));
}

onnx::NodeProto* add_node(onnx::ModelProto& m, const std::string& op, std::vector<std::string> inputs,
                          std::vector<std::string> outputs) {
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type(op);
  for (auto& i : inputs) node->add_input(i);
  for (auto& o : outputs) node->add_output(o);
  return node;
}

void add_ints(onnx::NodeProto* node, const std::string& name, std::vector<int64_t> values) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void add_int(onnx::NodeProto* node, const std::string& name, int64_t value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

// Loads the model; returns the error's code and message (fails the test if it loads).
std::pair<ErrorCode, std::string> load_error(const onnx::ModelProto& m) {
  std::string bytes = m.SerializeAsString();
  try {
    flock::Model::load({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, flock::ModelFormat::Onnx);
  } catch (const flock::Error& e) {
    return {e.code(), e.what()};
  }
  ADD_FAILURE() << "model loaded";
  return {ErrorCode::Internal, ""};
}

TEST(HostileImport, InitializerDimsThatOverflowAreRefused) {
  // [2^62+1, 4] floats wrap to 4 elements, which 16 bytes would satisfy.
  auto m = one_input_model({1});
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("table");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims((int64_t(1) << 62) + 1);
  t->add_dims(4);
  t->set_raw_data(std::string(16, '\0'));
  auto* idx = m.mutable_graph()->add_input();
  idx->set_name("idx");
  idx->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::INT64);
  add_node(m, "Gather", {"table", "idx"}, {"y"});
  add_output(m, "y", 3);
  auto [code, what] = load_error(m);
  EXPECT_EQ(code, ErrorCode::InvalidModel);
  EXPECT_NE(what.find("more elements than fit in a 64-bit size"), std::string::npos) << what;
}

TEST(HostileImport, Int64InitializerWithTooFewRawBytesIsRefused) {
  auto m = one_input_model({4});
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("shape");
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(2);
  t->set_raw_data(std::string("\x01\x00\x00\x00", 4));
  add_node(m, "Reshape", {"x", "shape"}, {"y"});
  add_output(m, "y", 2);
  auto [code, what] = load_error(m);
  EXPECT_EQ(code, ErrorCode::InvalidModel);
  EXPECT_NE(what.find("4 bytes of raw_data; its shape needs 16"), std::string::npos) << what;
}

TEST(HostileImport, TypedValuesThatDoNotMatchDimsAreRefused) {
  auto m = one_input_model({4});
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("b");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(4);
  t->add_float_data(1.0f);  // one value for four elements
  add_node(m, "Add", {"x", "b"}, {"y"});
  add_output(m, "y", 2);
  EXPECT_EQ(load_error(m).first, ErrorCode::InvalidModel);
}

TEST(HostileImport, MaxPoolZeroStrideIsRefused) {
  auto m = one_input_model({1, 8});
  auto* node = add_node(m, "MaxPool", {"x"}, {"y"});
  add_ints(node, "kernel_shape", {2});
  add_ints(node, "strides", {0});
  add_output(m, "y", 3);
  auto [code, what] = load_error(m);
  EXPECT_EQ(code, ErrorCode::InvalidModel);
  EXPECT_NE(what.find("strides"), std::string::npos) << what;
}

TEST(HostileImport, ConvNegativePadsAndZeroDilationsAreRefused) {
  for (const char* name : {"pads", "dilations"}) {
    auto m = one_input_model({1, 8});
    auto* w = m.mutable_graph()->add_initializer();
    w->set_name("w");
    w->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : {1, 1, 3}) w->add_dims(d);
    for (int k = 0; k < 3; ++k) w->add_float_data(1.0f);
    auto* node = add_node(m, "Conv", {"x", "w"}, {"y"});
    add_ints(node, "kernel_shape", {3});
    add_ints(node, name, std::string(name) == "pads" ? std::vector<int64_t>{-1, 0} : std::vector<int64_t>{0});
    add_output(m, "y", 3);
    EXPECT_EQ(load_error(m).first, ErrorCode::InvalidModel) << name;
  }
}

TEST(HostileImport, LayerNormalizationAxisOutOfRangeIsRefused) {
  for (int64_t axis : {-100, -3, 2, 100}) {
    auto m = one_input_model({4}, 17);
    for (const char* name : {"scale", "bias"}) {
      auto* t = m.mutable_graph()->add_initializer();
      t->set_name(name);
      t->set_data_type(onnx::TensorProto::FLOAT);
      t->add_dims(4);
      for (int k = 0; k < 4; ++k) t->add_float_data(1.0f);
    }
    auto* node = add_node(m, "LayerNormalization", {"x", "scale", "bias"}, {"y", "mean", "inv_std"});
    add_int(node, "axis", axis);
    add_output(m, "y", 2);
    add_output(m, "mean", 2);
    add_output(m, "inv_std", 2);
    auto [code, what] = load_error(m);
    EXPECT_EQ(code, ErrorCode::InvalidModel) << axis;
    EXPECT_NE(what.find("out of range"), std::string::npos) << what;
  }
}

TEST(HostileImport, NonUtf8StringsAreRefused) {
  auto m = one_input_model({4});
  add_node(m, "Relu", {"x"}, {"y"});
  add_output(m, "y", 2);
  m.set_producer_name("pro\xb4\xff");
  auto [code, what] = load_error(m);
  EXPECT_EQ(code, ErrorCode::InvalidModel);
  EXPECT_NE(what.find("producer_name is not valid UTF-8"), std::string::npos) << what;

  auto named = one_input_model({4});
  add_node(named, "Relu", {"x"}, {"y"})->set_name("node\xc3\x28");
  add_output(named, "y", 2);
  EXPECT_EQ(load_error(named).first, ErrorCode::InvalidModel);
}

TEST(HostileImport, InputWiderThanTheTensorLimitIsRefused) {
  // [N, 2^31, 2^31]: the per-row width overflows int64 on the way: dims no tensor can have.
  auto m = one_input_model({int64_t(1) << 31, int64_t(1) << 31, int64_t(1) << 31});
  add_node(m, "Relu", {"x"}, {"y"});
  add_output(m, "y", 4);
  EXPECT_EQ(load_error(m).first, ErrorCode::InvalidModel);
  // [N, 2^20, 2^20]: no overflow, but wider than the tensor limit.
  auto wide = one_input_model({int64_t(1) << 20, int64_t(1) << 20});
  add_node(wide, "Relu", {"x"}, {"y"});
  add_output(wide, "y", 3);
  EXPECT_EQ(load_error(wide).first, ErrorCode::LimitExceeded);
}

TEST(HostileImport, SubgraphsNestedTooDeepAreRefused) {
  // If nodes whose then_branch holds another If, 20 deep (protobuf's own parse limit, 100 nested
  // messages, allows about 33): the pre-checks walk subgraphs recursively and bound the nesting.
  auto m = one_input_model({4});
  add_output(m, "y", 2);
  onnx::GraphProto* g = m.mutable_graph();
  for (int depth = 0; depth < 20; ++depth) {
    auto* node = g->add_node();
    node->set_op_type("If");
    node->add_input("x");
    node->add_output(depth == 0 ? "y" : "y" + std::to_string(depth));
    auto* a = node->add_attribute();
    a->set_name("then_branch");
    a->set_type(onnx::AttributeProto::GRAPH);
    g = a->mutable_g();
    g->set_name("then" + std::to_string(depth));
  }
  auto [code, what] = load_error(m);
  EXPECT_EQ(code, ErrorCode::InvalidModel);
  EXPECT_NE(what.find("model nests subgraphs more than 16 deep"), std::string::npos) << what;
}

TEST(HostileImport, OrdinaryModelStillLoads) {
  auto m = one_input_model({4});
  auto* t = m.mutable_graph()->add_initializer();
  t->set_name("b");
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(4);
  t->set_raw_data(std::string(16, '\0'));
  add_node(m, "Add", {"x", "b"}, {"y"});
  add_output(m, "y", 2);
  std::string bytes = m.SerializeAsString();
  auto model = flock::Model::load({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_EQ(model->signature().inputs.at(0).width, 4);
}

}  // namespace
