// import_xgboost_json: structure of the produced ONNX model, and fidelity against XGBoost's own
// predictions (fixtures from tests/core/data/make_xgb_fixtures.py), running the TreeEnsemble
// kernels directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/importers.hpp"
#include "flock/kernel.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"
// After flock/onnx.hpp, which sets ONNX_ML / ONNX_NAMESPACE.
#include <onnx/checker.h>

#ifndef FLOCK_TEST_DATA_DIR
#error "FLOCK_TEST_DATA_DIR must point at tests/core/data"
#endif

namespace {

using json = nlohmann::json;
using flock::ErrorCode;
using flock::Tensor;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string fixture_path(const std::string& name, const char* kind) {
  return std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name + "." + kind + ".json";
}

onnx::ModelProto import_text(const std::string& text) {
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return flock::import_xgboost_json(bytes);
}

const flock::KernelRegistry& tree_registry() {
  static flock::KernelRegistry* r = [] {
    auto* reg = new flock::KernelRegistry();
    flock::register_ml_tree_kernels(*reg);
    return reg;
  }();
  return *r;
}

std::vector<Tensor> run_node(const flock::KernelRegistry& reg, const onnx::NodeProto& node, const Tensor& x,
                             int64_t opset) {
  const flock::KernelFactory* f = reg.find(node.domain(), node.op_type());
  if (!f) throw std::runtime_error("no kernel for " + node.op_type());
  flock::Attrs attrs(node);
  flock::KernelContext ctx{node, attrs, opset};
  auto kernel = (*f)(ctx);
  std::vector<Tensor> out(static_cast<size_t>(node.output_size()));
  kernel->run({&x}, out);
  return out;
}

Tensor input_tensor(const json& rows) {
  std::vector<float> v;
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t f = n ? static_cast<int64_t>(rows[0].size()) : 0;
  for (const auto& row : rows) {
    for (const auto& e : row) v.push_back(e.is_null() ? std::numeric_limits<float>::quiet_NaN() : e.get<float>());
  }
  return Tensor::floats({n, f}, v);
}

::testing::AssertionResult near(double got, double want) {
  const double tol = std::max(1e-6, 1e-5 * std::abs(want));
  if (std::abs(got - want) <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", want " << want << " (tolerance " << tol << ")";
}

std::vector<double> flat(const json& j) {
  std::vector<double> out;
  for (const auto& e : j) {
    if (e.is_array()) {
      for (const auto& x : e) out.push_back(x.get<double>());
    } else {
      out.push_back(e.get<double>());
    }
  }
  return out;
}

const onnx::AttributeProto* attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

int64_t opset_of(const onnx::ModelProto& m, const std::string& domain) {
  for (const auto& o : m.opset_import())
    if (o.domain() == domain) return o.version();
  return 0;
}

void expect_tensor_type(const onnx::ValueInfoProto& vi, const std::string& name, int32_t elem,
                        const std::vector<std::string>& dims) {
  EXPECT_EQ(vi.name(), name);
  ASSERT_TRUE(vi.type().has_tensor_type());
  EXPECT_EQ(vi.type().tensor_type().elem_type(), elem) << name;
  const auto& shape = vi.type().tensor_type().shape();
  ASSERT_EQ(shape.dim_size(), static_cast<int>(dims.size())) << name;
  for (int k = 0; k < shape.dim_size(); ++k) {
    const auto& d = shape.dim(k);
    EXPECT_EQ(d.has_dim_param() ? d.dim_param() : std::to_string(d.dim_value()), dims[static_cast<size_t>(k)])
        << name << " dim " << k;
  }
}

struct Case {
  onnx::ModelProto model;
  json data;
  Tensor x;
};

Case load_case(const std::string& name) {
  Case c;
  c.model = import_text(read_text(fixture_path(name, "model")));
  c.data = json::parse(read_text(fixture_path(name, "data")));
  c.x = input_tensor(c.data["inputs"]);
  return c;
}

void check_common(const Case& c) {
  const auto& m = c.model;
  EXPECT_NO_THROW(onnx::checker::check_model(m));
  EXPECT_EQ(m.ir_version(), 8);
  EXPECT_EQ(m.producer_name(), "xgboost");
  EXPECT_EQ(m.producer_version(), "1.7.4");
  EXPECT_EQ(opset_of(m, ""), 15);
  EXPECT_EQ(opset_of(m, "ai.onnx.ml"), 3);
  ASSERT_EQ(m.graph().input_size(), 1);
  expect_tensor_type(m.graph().input(0), "input", onnx::TensorProto::FLOAT,
                     {"N", std::to_string(c.x.shape[1])});
  const auto& node = m.graph().node(0);
  EXPECT_EQ(node.domain(), "ai.onnx.ml");
  ASSERT_NE(attr(node, "nodes_modes"), nullptr);
  for (const auto& mode : attr(node, "nodes_modes")->strings()) EXPECT_TRUE(mode == "BRANCH_LT" || mode == "LEAF");
}

void check_regressor(const std::string& name) {
  SCOPED_TRACE(name);
  Case c = load_case(name);
  check_common(c);
  const auto& g = c.model.graph();
  ASSERT_EQ(g.output_size(), 1);
  expect_tensor_type(g.output(0), "variable", onnx::TensorProto::FLOAT, {"N", "1"});
  EXPECT_EQ(g.node(0).op_type(), "TreeEnsembleRegressor");

  auto out = run_node(tree_registry(), g.node(0), c.x, 3);
  ASSERT_EQ(out.size(), 1u);
  const auto margin = flat(c.data["margin"]);
  const auto predict = flat(c.data["predict"]);
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{c.x.shape[0], 1}));
  for (size_t r = 0; r < margin.size(); ++r) EXPECT_TRUE(near(out[0].f[r], margin[r])) << "row " << r;

  if (c.data["objective"] == "reg:logistic") {
    ASSERT_EQ(g.node_size(), 2);
    EXPECT_EQ(g.node(0).output(0), "margin");
    const auto& sig = g.node(1);
    EXPECT_EQ(sig.op_type(), "Sigmoid");
    EXPECT_TRUE(sig.domain().empty());
    ASSERT_EQ(sig.input_size(), 1);
    EXPECT_EQ(sig.input(0), "margin");
    EXPECT_EQ(sig.output(0), "variable");
    ASSERT_EQ(g.value_info_size(), 1);
    expect_tensor_type(g.value_info(0), "margin", onnx::TensorProto::FLOAT, {"N", "1"});
    Tensor prob = out[0];
    // Use the standard Sigmoid kernel when it is there; the math is the same.
    if (flock::KernelRegistry::instance().find("", "Sigmoid")) {
      prob = run_node(flock::KernelRegistry::instance(), sig, out[0], 15)[0];
    } else {
      for (auto& v : prob.f) v = 1.0f / (1.0f + std::exp(-v));
    }
    for (size_t r = 0; r < predict.size(); ++r) EXPECT_TRUE(near(prob.f[r], predict[r])) << "row " << r;
  } else {
    ASSERT_EQ(g.node_size(), 1);
    EXPECT_EQ(g.node(0).output(0), "variable");
    for (size_t r = 0; r < predict.size(); ++r) EXPECT_TRUE(near(out[0].f[r], predict[r])) << "row " << r;
  }
}

void check_classifier(const std::string& name) {
  SCOPED_TRACE(name);
  Case c = load_case(name);
  check_common(c);
  const auto& g = c.model.graph();
  const std::string objective = c.data["objective"];
  const int64_t n_classes = objective == "binary:logistic" ? 2 : c.data["num_class"].get<int64_t>();
  ASSERT_EQ(g.node_size(), 1);
  ASSERT_EQ(g.output_size(), 2);
  expect_tensor_type(g.output(0), "label", onnx::TensorProto::INT64, {"N"});
  expect_tensor_type(g.output(1), "probabilities", onnx::TensorProto::FLOAT, {"N", std::to_string(n_classes)});
  const auto& node = g.node(0);
  EXPECT_EQ(node.op_type(), "TreeEnsembleClassifier");
  ASSERT_EQ(node.output_size(), 2);
  EXPECT_EQ(node.output(0), "label");
  EXPECT_EQ(node.output(1), "probabilities");
  ASSERT_NE(attr(node, "classlabels_int64s"), nullptr);
  EXPECT_EQ(attr(node, "classlabels_int64s")->ints_size(), n_classes);

  auto out = run_node(tree_registry(), node, c.x, 3);
  ASSERT_EQ(out.size(), 2u);
  const int64_t rows = c.x.shape[0];
  ASSERT_EQ(out[0].shape, (std::vector<int64_t>{rows}));
  ASSERT_EQ(out[1].shape, (std::vector<int64_t>{rows, n_classes}));
  const auto proba = flat(c.data["proba"]);
  const auto predict = flat(c.data["predict"]);
  ASSERT_EQ(proba.size(), static_cast<size_t>(rows * n_classes));
  for (size_t k = 0; k < proba.size(); ++k) EXPECT_TRUE(near(out[1].f[k], proba[k])) << "value " << k;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t want;
    if (objective == "binary:logistic") {
      want = predict[static_cast<size_t>(r)] > 0.5 ? 1 : 0;
    } else if (objective == "multi:softmax") {
      want = static_cast<int64_t>(predict[static_cast<size_t>(r)]);
    } else {
      auto begin = proba.begin() + r * n_classes;
      want = std::max_element(begin, begin + n_classes) - begin;
    }
    EXPECT_EQ(out[0].i[static_cast<size_t>(r)], want) << "row " << r;
  }
}

// ------------------------------------------------------------------------------------------------

TEST(XGBoostImport, RegSquaredError) { check_regressor("reg_squarederror"); }
TEST(XGBoostImport, RegLogistic) { check_regressor("reg_logistic"); }
TEST(XGBoostImport, BinaryLogistic) { check_classifier("binary_logistic"); }
TEST(XGBoostImport, BinaryWithOnlyPositiveLeaves) { check_classifier("binary_positive_leaves"); }
TEST(XGBoostImport, MultiSoftprob) { check_classifier("multi_softprob"); }
TEST(XGBoostImport, MultiSoftmax) { check_classifier("multi_softmax"); }
TEST(XGBoostImport, MultiSoftprobTwoClasses) { check_classifier("multi_softprob_2class"); }

TEST(XGBoostImport, FeatureNamesInMetadata) {
  auto m = import_text(read_text(fixture_path("reg_squarederror", "model")));
  ASSERT_EQ(m.metadata_props_size(), 1);
  EXPECT_EQ(m.metadata_props(0).key(), "feature_names");
  EXPECT_EQ(json::parse(m.metadata_props(0).value()), json({"age", "sex", "bmi", "bp", "s1"}));
  auto unnamed = import_text(read_text(fixture_path("binary_logistic", "model")));
  EXPECT_EQ(unnamed.metadata_props_size(), 0);
}

TEST(XGBoostImport, BinaryEncodings) {
  // Mixed-sign leaves: ORT's single-score case (one class id, one base value).
  auto m = import_text(read_text(fixture_path("binary_logistic", "model")));
  const auto& n = m.graph().node(0);
  EXPECT_EQ(attr(n, "post_transform")->s(), "LOGISTIC");
  EXPECT_EQ(attr(n, "base_values")->floats_size(), 1);
  EXPECT_NEAR(attr(n, "base_values")->floats(0), std::log(0.3 / 0.7), 1e-6);  // logit(base_score 0.3)
  for (auto id : attr(n, "class_ids")->ints()) EXPECT_EQ(id, 0);
  // Only non-negative leaves: class 1 gets zero weights so ORT does not skip the sigmoid.
  auto p = import_text(read_text(fixture_path("binary_positive_leaves", "model")));
  const auto& pn = p.graph().node(0);
  EXPECT_EQ(attr(pn, "base_values")->floats_size(), 2);
  const auto& ids = attr(pn, "class_ids")->ints();
  EXPECT_NE(std::find(ids.begin(), ids.end(), 1), ids.end());
}

// ------------------------------------------------------------------------------------------------
// Errors

ErrorCode code_of(const std::function<void()>& f, std::string* msg = nullptr, std::string* hint = nullptr) {
  try {
    f();
  } catch (const flock::Error& e) {
    if (msg) *msg = e.what();
    if (hint) *hint = e.hint();
    return e.code();
  }
  ADD_FAILURE() << "expected a flock::Error";
  return ErrorCode::Internal;
}

json base_model() { return json::parse(read_text(fixture_path("multi_softprob", "model"))); }

ErrorCode import_json(const json& j, std::string* msg = nullptr, std::string* hint = nullptr) {
  return code_of([&] { import_text(j.dump()); }, msg, hint);
}

TEST(XGBoostImportErrors, MalformedJson) {
  std::string msg;
  EXPECT_EQ(code_of([] { import_text("{ \"learner\": "); }, &msg), ErrorCode::InvalidModel);
  EXPECT_EQ(msg.rfind("xgboost model:", 0), 0u) << msg;
  EXPECT_EQ(code_of([] { import_text(""); }), ErrorCode::InvalidModel);
  EXPECT_EQ(code_of([] { import_text("[1, 2]"); }), ErrorCode::InvalidModel);
}

TEST(XGBoostImportErrors, MissingKeysAreNamed) {
  struct {
    std::function<void(json&)> edit;
    const char* expect;
  } cases[] = {
      {[](json& j) { j.erase("learner"); }, "'learner'"},
      {[](json& j) { j["learner"].erase("learner_model_param"); }, "learner.learner_model_param"},
      {[](json& j) { j["learner"]["learner_model_param"].erase("num_feature"); },
       "learner.learner_model_param.num_feature"},
      {[](json& j) { j["learner"]["objective"].erase("name"); }, "learner.objective.name"},
      {[](json& j) { j["learner"]["gradient_booster"]["model"].erase("tree_info"); }, "tree_info"},
      {[](json& j) { j["learner"]["gradient_booster"]["model"]["trees"][1].erase("left_children"); },
       "trees[1].left_children"},
      {[](json& j) { j["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"] = "x"; },
       "split_conditions"},
      {[](json& j) { j["learner"]["learner_model_param"]["base_score"] = "abc"; }, "base_score"},
  };
  for (const auto& c : cases) {
    json j = base_model();
    c.edit(j);
    std::string msg;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel) << c.expect;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("xgboost model:", 0), 0u) << msg;
  }
}

TEST(XGBoostImportErrors, BadTrees) {
  std::string msg;
  {
    json j = base_model();
    j["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 17;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("feature 17"), std::string::npos) << msg;
  }
  {
    json j = base_model();
    j["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][0] = 99;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
  }
  {
    json j = base_model();  // a branch below the root points back at the root
    auto& t = j["learner"]["gradient_booster"]["model"]["trees"][0];
    size_t k = 1;
    while (k < t["left_children"].size() && t["left_children"][k] == -1) ++k;
    ASSERT_LT(k, t["left_children"].size());
    t["left_children"][k] = 0;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("twice"), std::string::npos) << msg;
  }
  {
    json j = base_model();
    j["learner"]["gradient_booster"]["model"]["tree_info"][0] = 5;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("tree_info[0]"), std::string::npos) << msg;
  }
  {
    json j = base_model();
    j["learner"]["gradient_booster"]["model"]["trees"] = json::array();
    j["learner"]["gradient_booster"]["model"]["tree_info"] = json::array();
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
  }
  {
    json j = base_model();
    auto& t = j["learner"]["gradient_booster"]["model"]["trees"][0];
    t["right_children"].erase(0);
    EXPECT_EQ(import_json(j, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("right_children"), std::string::npos) << msg;
  }
}

TEST(XGBoostImportErrors, UnsupportedBoostersAndObjectives) {
  std::string msg, hint;
  for (const char* booster : {"gblinear", "dart"}) {
    json j = base_model();
    j["learner"]["gradient_booster"]["name"] = booster;
    EXPECT_EQ(import_json(j, &msg, &hint), ErrorCode::UnsupportedOperator) << booster;
    EXPECT_NE(msg.find(booster), std::string::npos) << msg;
    EXPECT_NE(hint.find("multi:softprob"), std::string::npos) << hint;
  }
  for (const char* objective : {"reg:gamma", "count:poisson", "rank:pairwise", "binary:logitraw"}) {
    json j = base_model();
    j["learner"]["objective"]["name"] = objective;
    EXPECT_EQ(import_json(j, &msg, &hint), ErrorCode::UnsupportedOperator) << objective;
    EXPECT_NE(msg.find(objective), std::string::npos) << msg;
    EXPECT_NE(hint.find("reg:squarederror"), std::string::npos) << hint;
  }
  {
    json j = base_model();
    j["learner"]["gradient_booster"]["model"]["trees"][2]["split_type"][0] = 1;
    EXPECT_EQ(import_json(j, &msg), ErrorCode::UnsupportedOperator);
    EXPECT_NE(msg.find("categorical"), std::string::npos) << msg;
  }
}

// ------------------------------------------------------------------------------------------------
// Model::load's route: the importer hands the ensemble to the kernel directly. It must predict
// exactly what the standard ONNX attributes give (loaded through the ONNX route, checker
// included), and what XGBoost's own tree walk gives leaf for leaf.

flock::FeatureBatch batch_of(const Tensor& x) {
  flock::FeatureBatch b;
  b.rows = x.shape[0];
  b.inputs.push_back(x);
  return b;
}

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(XGBoostImport, CompiledRouteMatchesOnnxRoute) {
  for (const char* name : {"reg_squarederror", "reg_logistic", "binary_logistic", "binary_positive_leaves",
                           "multi_softprob", "multi_softmax", "multi_softprob_2class"}) {
    SCOPED_TRACE(name);
    const std::string text = read_text(fixture_path(name, "model"));
    Case c = load_case(name);
    std::string onnx_bytes;
    ASSERT_TRUE(c.model.SerializeToString(&onnx_bytes));
    auto direct = flock::Model::load(as_bytes(text));
    auto via_onnx = flock::Model::load(as_bytes(onnx_bytes), flock::ModelFormat::Onnx);
    EXPECT_EQ(direct->signature_json(), via_onnx->signature_json().replace(
                                            via_onnx->signature_json().find("\"onnx\""), 6, "\"xgboost\""));
    for (int64_t rows : {c.x.shape[0], int64_t(1), int64_t(3)}) {
      Tensor x = c.x;
      x.shape[0] = rows;
      x.f.resize(static_cast<size_t>(rows * x.shape[1]));
      auto a = direct->run(batch_of(x));
      auto b = via_onnx->run(batch_of(x));
      ASSERT_EQ(a.size(), b.size());
      for (size_t k = 0; k < a.size(); ++k) {
        EXPECT_EQ(a[k].shape, b[k].shape);
        EXPECT_EQ(a[k].f, b[k].f) << "output " << k;
        EXPECT_EQ(a[k].i, b[k].i) << "output " << k;
      }
    }
  }
}

float ort_logistic(float val) {
  float v = 1 / (1 + std::exp(-std::abs(val)));
  return (val < 0) ? (1 - v) : v;
}

// An XGBoost-shaped binary:logistic model with random trees (node ids in breadth-first order like
// XGBoost's, random default directions, thresholds rows often hit exactly).
struct RandomXgb {
  json model;
  std::vector<std::vector<int64_t>> left, right, feature, default_left;
  std::vector<std::vector<float>> cond;
};

RandomXgb random_xgb(int n_trees, int max_depth, int n_features, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-2, 2);
  RandomXgb r;
  json trees = json::array();
  for (int t = 0; t < n_trees; ++t) {
    std::vector<int64_t> L, R, F, D;
    std::vector<float> C;
    std::vector<int> depth{0};
    L.push_back(-1), R.push_back(-1), F.push_back(0), D.push_back(0), C.push_back(0);
    for (size_t k = 0; k < L.size(); ++k) {  // breadth first
      const bool leaf = depth[k] >= max_depth || (depth[k] > 0 && gen() % 100 < 15u);
      if (leaf) {
        C[k] = u(gen) * 0.1f;
        continue;
      }
      F[k] = static_cast<int64_t>(gen() % n_features);
      C[k] = std::round(u(gen) * 4) / 4;
      D[k] = gen() % 2;
      for (int side = 0; side < 2; ++side) {
        (side == 0 ? L : R)[k] = static_cast<int64_t>(L.size());
        L.push_back(-1), R.push_back(-1), F.push_back(0), D.push_back(0), C.push_back(0);
        depth.push_back(depth[k] + 1);
      }
    }
    const size_t n = L.size();
    trees.push_back({{"base_weights", std::vector<float>(n, 0.0f)},
                     {"categories", json::array()},
                     {"categories_nodes", json::array()},
                     {"categories_segments", json::array()},
                     {"categories_sizes", json::array()},
                     {"default_left", D},
                     {"id", t},
                     {"left_children", L},
                     {"loss_changes", std::vector<float>(n, 0.5f)},
                     {"parents", std::vector<int64_t>(n, 2147483647)},
                     {"right_children", R},
                     {"split_conditions", C},
                     {"split_indices", F},
                     {"split_type", std::vector<int>(n, 0)},
                     {"sum_hessian", std::vector<float>(n, 1.0f)},
                     {"tree_param", {{"num_deleted", "0"}, {"num_feature", std::to_string(n_features)},
                                     {"num_nodes", std::to_string(n)}, {"size_leaf_vector", "0"}}}});
    r.left.push_back(L), r.right.push_back(R), r.feature.push_back(F), r.default_left.push_back(D), r.cond.push_back(C);
  }
  r.model = {{"learner",
              {{"attributes", json::object()},
               {"feature_names", json::array()},
               {"feature_types", json::array()},
               {"gradient_booster",
                {{"model",
                  {{"gbtree_model_param", {{"num_parallel_tree", "1"}, {"num_trees", std::to_string(n_trees)}}},
                   {"tree_info", std::vector<int>(static_cast<size_t>(n_trees), 0)},
                   {"trees", trees}}},
                 {"name", "gbtree"}}},
               {"learner_model_param",
                {{"base_score", "5E-1"}, {"boost_from_average", "1"}, {"num_class", "0"},
                 {"num_feature", std::to_string(n_features)}, {"num_target", "1"}}},
               {"objective", {{"name", "binary:logistic"}, {"reg_loss_param", {{"scale_pos_weight", "1"}}}}}}},
             {"version", {1, 7, 4}}};
  return r;
}

TEST(XGBoostImport, CompiledRouteTakesXGBoostsLeaves) {
  for (int max_depth : {3, 6, 8, 10}) {
    SCOPED_TRACE(max_depth);
    const int n_features = 6;
    const int n_trees = 37;
    RandomXgb m = random_xgb(n_trees, max_depth, n_features, static_cast<uint32_t>(max_depth));
    auto model = flock::Model::load(as_bytes(m.model.dump()));
    std::mt19937 gen(99);
    std::uniform_real_distribution<float> u(-2.5f, 2.5f);
    for (int64_t rows : {1, 2, 7, 9, 16, 31, 200}) {
      std::vector<float> v(static_cast<size_t>(rows * n_features));
      for (auto& x : v) {
        const uint32_t c = gen() % 16;
        x = c == 0   ? std::numeric_limits<float>::quiet_NaN()
            : c == 1 ? std::numeric_limits<float>::infinity()
            : c == 2 ? -std::numeric_limits<float>::infinity()
            : c < 6  ? std::round(u(gen) * 4) / 4
                     : u(gen);
      }
      auto p = model->predict(batch_of(Tensor::floats({rows, n_features}, v)));
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = &v[static_cast<size_t>(r * n_features)];
        double sum = 0;
        for (int t = 0; t < n_trees; ++t) {
          int64_t k = 0;
          while (m.left[t][k] != -1) {
            const float x = row[m.feature[t][k]];
            const bool go_left = std::isnan(x) ? m.default_left[t][k] != 0 : x < m.cond[t][k];
            k = go_left ? m.left[t][k] : m.right[t][k];
          }
          sum += static_cast<double>(m.cond[t][k]);
        }
        const float want = ort_logistic(static_cast<float>(sum + 0.0));  // base_score 0.5: margin 0
        ASSERT_EQ(static_cast<float>(p.proba[static_cast<size_t>(2 * r + 1)]), want) << "rows " << rows << " row " << r;
        ASSERT_EQ(p.values[static_cast<size_t>(r)], sum > 0 ? 1.0 : 0.0) << "row " << r;
      }
    }
  }
}

TEST(XGBoostImport, JsonStringsAndNumbers) {
  json j = base_model();
  // Escapes, non-ASCII names and a surrogate pair survive into the metadata.
  std::vector<std::string> names = {"a\"b\\c/d", "tab\there", "caf\xc3\xa9", "\xf0\x9f\x98\x80"};
  j["learner"]["feature_names"] = names;
  j["learner"]["feature_types"] = std::vector<std::string>(4, "float");
  // ensure_ascii-style escapes, as other writers produce
  std::string text = j.dump(-1, ' ', /*ensure_ascii=*/true);
  auto m = import_text(text);
  ASSERT_EQ(m.metadata_props_size(), 1);
  EXPECT_EQ(json::parse(m.metadata_props(0).value()).get<std::vector<std::string>>(), names);
  // Pretty-printed, numbers in every JSON form.
  json k = base_model();
  k["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"][0] = 0.5e0;
  auto pretty = import_text(k.dump(2));
  auto compact = import_text(k.dump());
  EXPECT_EQ(pretty.SerializeAsString(), compact.SerializeAsString());
  // Mixed arrays are read element by element.
  json mixed = base_model();
  mixed["version"] = {1, 7, "x"};
  EXPECT_EQ(import_text(mixed.dump()).producer_version(), "1.7");
}

TEST(XGBoostImportErrors, InvalidJsonIsRejected) {
  const std::string good = base_model().dump();
  const std::string cases[] = {
      "{\"learner\": 01}",
      "{\"learner\": 1.}",
      "{\"learner\": -}",
      "{\"learner\": 1e}",
      "{\"learner\": [\"a\", 1,]}",
      "{\"learner\": [\"a\" 1]}",
      "{\"learner\": {\"a\" 1}}",
      "{\"learner\": {\"a\": 1,}}",
      "{\"learner\": \"\\x\"}",
      "{\"learner\": \"\\ud800\"}",
      "{\"learner\": \"\\udc00x\"}",
      "{\"learner\": \"\\u12\"}",
      std::string("{\"learner\": \"a\x01\"}"),
      std::string("{\"learner\": \"\xff\"}"),
      std::string("{\"learner\": \"\xc3\"}"),
      std::string("{\"learner\": \"\xed\xa0\x80\"}"),
      "{\"learner\": tru}",
      "{\"learner\": nul}",
      "{\"learner\": [}",
      "{\"learner\": [1, 2",
      "{\"learner\": \"abc",
      good + " x",
      good.substr(0, good.size() / 2),
      std::string(600, '[') + std::string(600, ']'),
  };
  for (const auto& text : cases) {
    std::string msg;
    EXPECT_EQ(code_of([&] { import_text(text); }, &msg), ErrorCode::InvalidModel) << text.substr(0, 60);
    EXPECT_EQ(msg.rfind("xgboost model: not valid JSON", 0), 0u) << msg;
  }
  // Valid JSON of the wrong shape is named by path, not as a syntax error.
  std::string msg;
  EXPECT_EQ(code_of([] { import_text("{\"learner\": [1, \"a\", {}, null, true]}"); }, &msg), ErrorCode::InvalidModel);
  EXPECT_NE(msg.find("'learner' is not a JSON object"), std::string::npos) << msg;
}

// Arrays of numbers the importer reads are parsed strictly, and so is every other number.
TEST(XGBoostImportErrors, NumberArraysTheImporterReads) {
  const char* bad_arrays[] = {"[1, 2,]", "[1 2]", "[01]", "[1.]", "[-]", "[,1]", "[1,,2]", "[1e]", "[--1]", "[1.2.3]"};
  for (const char* arr : bad_arrays) {
    for (const char* field : {"left_children", "split_conditions"}) {
      json j = base_model();
      std::string text = j.dump();
      const std::string key = std::string("\"") + field + "\":";
      const size_t at = text.find(key);
      ASSERT_NE(at, std::string::npos);
      const size_t open = at + key.size(), close = text.find(']', open);
      text.replace(open, close - open + 1, arr);
      std::string msg;
      EXPECT_EQ(code_of([&] { import_text(text); }, &msg), ErrorCode::InvalidModel) << field << " " << arr;
      EXPECT_TRUE(msg.find("not valid JSON") != std::string::npos || msg.find(field) != std::string::npos) << msg;
    }
  }
}

// A malformed number is rejected wherever it is: in the per-node statistics the importer never
// reads (README "Known limits" used to allow these) as much as in the arrays it reads.
TEST(XGBoostImportErrors, MalformedNumbersAnywhereAreRejected) {
  const char* bad_arrays[] = {"[1..2, 3]", "[1e, 3]", "[-, 3]", "[1, x, 3]", "[1, 2e+, 3]", "[1, .5, 3]"};
  for (const char* arr : bad_arrays) {
    for (const char* field : {"sum_hessian", "loss_changes", "base_weights", "split_conditions", "tree_info"}) {
      json j = base_model();
      std::string text = j.dump();
      const std::string key = std::string("\"") + field + "\":";
      const size_t at = text.find(key);
      ASSERT_NE(at, std::string::npos) << field;
      const size_t open = at + key.size(), close = text.find(']', open);
      text.replace(open, close - open + 1, arr);
      std::string msg;
      EXPECT_EQ(code_of([&] { import_text(text); }, &msg), ErrorCode::InvalidModel) << field << " " << arr;
      EXPECT_TRUE(msg.find("not valid JSON") != std::string::npos || msg.find(field) != std::string::npos) << msg;
    }
  }
  // A malformed number as a lone value, in a member the importer does not read.
  for (const char* value : {"1..2", "1e", "-", "01"}) {
    json j = base_model();
    j["learner"]["unused_statistic"] = "PLACEHOLDER";
    std::string text = j.dump();
    text.replace(text.find("\"PLACEHOLDER\""), 13, value);
    std::string msg;
    EXPECT_EQ(code_of([&] { import_text(text); }, &msg), ErrorCode::InvalidModel) << value;
    EXPECT_EQ(msg.rfind("xgboost model: not valid JSON", 0), 0u) << msg;
  }
}

}  // namespace

namespace {

// Feature names that are not UTF-8 (raw bytes in the JSON text): a clean InvalidModel at load,
// never a JSON library exception (issue 11: json type_error 316 reached SQL as XX000).
TEST(XGBoostImportErrors, NonUtf8FeatureNamesAreInvalidModel) {
  json j = base_model();
  j["learner"]["feature_names"] = std::vector<std::string>{"a", "PLACEHOLDER", "c", "d"};
  j["learner"]["feature_types"] = std::vector<std::string>(4, "float");
  std::string text = j.dump();
  text.replace(text.find("PLACEHOLDER"), 11, "b\xff\xfe");
  std::vector<uint8_t> bytes(text.begin(), text.end());
  try {
    flock::Model::load(bytes);
    ADD_FAILURE() << "loaded";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), flock::ErrorCode::InvalidModel) << e.what();
    EXPECT_EQ(std::string(e.what()).find("type_error"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
  }
}

}  // namespace
