// flock::Model: loading, validation, signature, binding-relevant facts and prediction on small
// hand-built graphs (the kernels have their own tests).
#include <gtest/gtest.h>

#include <cmath>

#include "flock/model.hpp"
#include "flock/onnx.hpp"

namespace {

using flock::ErrorCode;

onnx::ModelProto base_model(int64_t n_features) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("model_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(15);
  op = m.add_opset_import();
  op->set_domain("ai.onnx.ml");
  op->set_version(1);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* in = g->add_input();
  in->set_name("input");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  tt->mutable_shape()->add_dim()->set_dim_value(n_features);
  return m;
}

void add_output(onnx::ModelProto& m, const std::string& name, int elem, std::vector<int64_t> dims) {
  auto* out = m.mutable_graph()->add_output();
  out->set_name(name);
  auto* tt = out->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

onnx::AttributeProto* attr(onnx::NodeProto* node, const std::string& name, onnx::AttributeProto::AttributeType t) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(t);
  return a;
}

// y = 1*x0 + 2*x1 + 0.5
onnx::ModelProto linear_model() {
  auto m = base_model(2);
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("LinearRegressor");
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  node->add_output("variable");
  auto* c = attr(node, "coefficients", onnx::AttributeProto::FLOATS);
  c->add_floats(1.0f);
  c->add_floats(2.0f);
  attr(node, "intercepts", onnx::AttributeProto::FLOATS)->add_floats(0.5f);
  add_output(m, "variable", onnx::TensorProto::FLOAT, {1});
  return m;
}

std::vector<uint8_t> bytes_of(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return {s.begin(), s.end()};
}

flock::FeatureBatch batch_of(std::vector<float> values, int64_t rows) {
  flock::FeatureBatch b;
  b.rows = rows;
  b.inputs.push_back(flock::Tensor::floats({rows, static_cast<int64_t>(values.size()) / rows}, std::move(values)));
  return b;
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const flock::Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no flock::Error thrown";
  return ErrorCode::Internal;
}

TEST(Model, LoadsAndPredictsABatch) {
  auto bytes = bytes_of(linear_model());
  auto model = flock::Model::load(bytes);
  EXPECT_EQ(model->format(), flock::ModelFormat::Onnx);
  const auto& sig = model->signature();
  ASSERT_EQ(sig.inputs.size(), 1u);
  EXPECT_EQ(sig.inputs[0].width, 2);
  EXPECT_EQ(sig.task, flock::Task::Regression);
  EXPECT_TRUE(sig.feature_names.empty());
  EXPECT_EQ(sig.operators, std::vector<std::string>{"ai.onnx.ml:LinearRegressor"});
  auto p = model->predict(batch_of({1, 1, 2, 3, 0, 0}, 3));
  ASSERT_EQ(p.values.size(), 3u);
  EXPECT_FLOAT_EQ(p.values[0], 3.5);
  EXPECT_FLOAT_EQ(p.values[1], 8.5);
  EXPECT_FLOAT_EQ(p.values[2], 0.5);
}

// Two classes (labels 7 and 9): scores x0 - x1 and x1 - x0, no post transform.
onnx::ModelProto classifier_model() {
  auto m = base_model(2);
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("LinearClassifier");
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  node->add_output("label");
  node->add_output("scores");
  auto* c = attr(node, "coefficients", onnx::AttributeProto::FLOATS);
  for (float v : {1.0f, -1.0f, -1.0f, 1.0f}) c->add_floats(v);
  auto* icpt = attr(node, "intercepts", onnx::AttributeProto::FLOATS);
  icpt->add_floats(0.0f);
  icpt->add_floats(0.0f);
  auto* labels = attr(node, "classlabels_ints", onnx::AttributeProto::INTS);
  labels->add_ints(7);
  labels->add_ints(9);
  add_output(m, "label", onnx::TensorProto::INT64, {});
  add_output(m, "scores", onnx::TensorProto::FLOAT, {2});
  return m;
}

TEST(Model, PredictFillsTheAskedParts) {
  auto model = flock::Model::load(bytes_of(classifier_model()));
  auto all = model->predict(batch_of({3, 1, 0, 2}, 2));
  EXPECT_EQ(all.values, (std::vector<double>{7, 9}));
  EXPECT_EQ(all.labels, (std::vector<std::string>{"7", "9"}));
  EXPECT_EQ(all.proba, (std::vector<double>{2, -2, -2, 2}));
  EXPECT_EQ(all.n_classes, 2);
  auto values = model->predict(batch_of({3, 1, 0, 2}, 2), flock::kPredictValues);
  EXPECT_EQ(values.values, all.values);
  EXPECT_TRUE(values.labels.empty() && values.proba.empty());
  auto labels = model->predict(batch_of({3, 1, 0, 2}, 2), flock::kPredictLabels);
  EXPECT_EQ(labels.labels, all.labels);
  EXPECT_TRUE(labels.values.empty() && labels.proba.empty());
  auto proba = model->predict(batch_of({3, 1, 0, 2}, 2), flock::kPredictProba);
  EXPECT_EQ(proba.proba, all.proba);
  EXPECT_EQ(proba.n_classes, 2);
  EXPECT_TRUE(proba.values.empty() && proba.labels.empty());
}

TEST(Model, LinearModelHasNoMissingValueSemantics) {
  auto model = flock::Model::load(bytes_of(linear_model()));
  EXPECT_FALSE(model->signature().input_accepts_missing[0]);
}

TEST(Model, ImputerBeforeLinearAcceptsMissing) {
  auto m = linear_model();
  auto* g = m.mutable_graph();
  // input -> Imputer -> imputed -> LinearRegressor
  onnx::NodeProto imputer;
  imputer.set_op_type("Imputer");
  imputer.set_domain("ai.onnx.ml");
  imputer.add_input("input");
  imputer.add_output("imputed");
  auto* v = attr(&imputer, "imputed_value_floats", onnx::AttributeProto::FLOATS);
  v->add_floats(7.0f);
  v->add_floats(0.0f);
  attr(&imputer, "replaced_value_float", onnx::AttributeProto::FLOAT)->set_f(NAN);
  g->mutable_node(0)->set_input(0, "imputed");
  *g->add_node() = g->node(0);
  *g->mutable_node(0) = imputer;
  auto model = flock::Model::load(bytes_of(m));
  EXPECT_TRUE(model->signature().input_accepts_missing[0]);
  auto p = model->predict(batch_of({NAN, 1}, 1));
  EXPECT_FLOAT_EQ(p.values[0], 7 + 2 + 0.5);
}

TEST(Model, FeatureNamesFromMetadataMustMatchTheInputWidth) {
  auto m = linear_model();
  auto* prop = m.add_metadata_props();
  prop->set_key("feature_names");
  prop->set_value("[\"a\", \"b\"]");
  EXPECT_EQ(flock::Model::load(bytes_of(m))->signature().feature_names, (std::vector<std::string>{"a", "b"}));
  prop->set_value("a, b, c");
  EXPECT_EQ(code_of([&] { flock::Model::load(bytes_of(m)); }), ErrorCode::InvalidModel);
}

TEST(Model, WithFeatureNamesEmbedsAndValidates) {
  auto bytes = bytes_of(linear_model());
  auto named = flock::with_feature_names(bytes, flock::ModelFormat::Onnx, {"p", "q"});
  EXPECT_EQ(flock::Model::load(named)->signature().feature_names, (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(code_of([&] { flock::with_feature_names(bytes, flock::ModelFormat::Onnx, {"p"}); }),
            ErrorCode::InvalidModel);
}

TEST(Model, RejectsMalformedBytes) {
  auto bytes = bytes_of(linear_model());
  std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + bytes.size() / 2);
  EXPECT_EQ(code_of([&] { flock::Model::load(truncated); }), ErrorCode::InvalidModel);
  std::vector<uint8_t> empty;
  EXPECT_EQ(code_of([&] { flock::Model::load(empty); }), ErrorCode::InvalidModel);
  std::vector<uint8_t> junk = {0xff, 0xff, 0xff, 0xff, 0x01};
  EXPECT_EQ(code_of([&] { flock::Model::load(junk); }), ErrorCode::InvalidModel);
}

TEST(Model, RejectsUnsupportedOperatorNamingIt) {
  auto m = base_model(3);  // [N, 3] ...
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(3);
  auto* node = m.mutable_graph()->add_node();  // ... [N, 3, 3] -> determinant per row: [N]
  node->set_op_type("Det");
  node->add_input("input");
  node->add_output("y");
  add_output(m, "y", onnx::TensorProto::FLOAT, {});
  try {
    flock::Model::load(bytes_of(m));
    FAIL() << "loaded";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::UnsupportedOperator);
    EXPECT_NE(std::string(e.what()).find("Det"), std::string::npos);
  }
}

TEST(Model, RejectsGraphsOutOfOrder) {
  auto m = linear_model();
  m.mutable_graph()->mutable_node(0)->set_input(0, "not_yet_defined");
  EXPECT_EQ(code_of([&] { flock::Model::load(bytes_of(m)); }), ErrorCode::InvalidModel);
}

TEST(Model, ChecksBatchShapeAndType) {
  auto model = flock::Model::load(bytes_of(linear_model()));
  EXPECT_EQ(code_of([&] { model->predict(batch_of({1, 2, 3}, 1)); }), ErrorCode::InvalidInput);
  flock::FeatureBatch b;
  b.rows = 1;
  b.inputs.push_back(flock::Tensor::doubles({1, 2}, {1, 2}));
  EXPECT_EQ(code_of([&] { model->predict(b); }), ErrorCode::TypeMismatch);
}

TEST(Model, EnforcesTensorLimit) {
  flock::Limits limits;
  limits.max_tensor_elements = 4;
  auto model = flock::Model::load(bytes_of(linear_model()), flock::ModelFormat::Auto, limits);
  EXPECT_NO_THROW(model->predict(batch_of({1, 2, 3, 4}, 2)));
  EXPECT_EQ(code_of([&] { model->predict(batch_of({1, 2, 3, 4, 5, 6}, 3)); }), ErrorCode::LimitExceeded);
  limits.max_model_bytes = 10;
  EXPECT_EQ(code_of([&] { flock::Model::load(bytes_of(linear_model()), flock::ModelFormat::Auto, limits); }),
            ErrorCode::LimitExceeded);
}

TEST(Model, DetectsFormat) {
  std::vector<uint8_t> json = {' ', '\n', '{', '}'};
  EXPECT_EQ(flock::detect_format(json), flock::ModelFormat::XGBoostJson);
  EXPECT_EQ(flock::detect_format(bytes_of(linear_model())), flock::ModelFormat::Onnx);
  EXPECT_EQ(code_of([] { flock::parse_format("pickle"); }), ErrorCode::InvalidInput);
}

TEST(Model, SignatureJsonNamesEverything) {
  auto model = flock::Model::load(bytes_of(linear_model()));
  std::string json = model->signature_json();
  for (const char* key : {"\"inputs\"", "\"outputs\"", "\"operators\"", "\"task\":\"regression\"", "\"accepts_null\""})
    EXPECT_NE(json.find(key), std::string::npos) << key;
}

}  // namespace

namespace {

TEST(Model, RejectsContradictoryDeclaredTypes) {
  // Relu of a float tensor is float; declaring its output int64 contradicts the operator.
  auto m = base_model(3);
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("Relu");
  node->add_input("input");
  node->add_output("y");
  add_output(m, "y", onnx::TensorProto::INT64, {3});
  try {
    flock::Model::load(bytes_of(m));
    FAIL() << "loaded";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidModel);
    EXPECT_NE(std::string(e.what()).find("types or shapes"), std::string::npos) << e.what();
  }
  // Declared correctly, the same graph loads.
  m.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::FLOAT);
  EXPECT_NO_THROW(flock::Model::load(bytes_of(m)));
}

}  // namespace
