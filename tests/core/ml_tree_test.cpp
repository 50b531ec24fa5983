// TreeEnsembleRegressor / TreeEnsembleClassifier kernels, on hand-built NodeProtos. Expected values
// follow ONNX Runtime's semantics (tree_ensemble_aggregator.h / ml_common.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/kernel.hpp"
#include "flock/onnx.hpp"
#include "flock/tensor.hpp"
// The kernels' internal interface for ensembles compiled elsewhere (the XGBoost importer).
#include "../../core/src/kernels/ml_tree.hpp"

namespace {

using flock::ElemType;
using flock::ErrorCode;
using flock::Tensor;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- NodeProto helpers

void set_ints(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a->add_ints(x);
}
void set_floats(onnx::NodeProto& n, const std::string& name, const std::vector<float>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  for (auto x : v) a->add_floats(x);
}
void set_strings(onnx::NodeProto& n, const std::string& name, const std::vector<std::string>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRINGS);
  for (const auto& x : v) a->add_strings(x);
}
void set_int(onnx::NodeProto& n, const std::string& name, int64_t v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void set_string(onnx::NodeProto& n, const std::string& name, const std::string& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}
void set_double_tensor(onnx::NodeProto& n, const std::string& name, const std::vector<double>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::TENSOR);
  auto* t = a->mutable_t();
  t->set_data_type(onnx::TensorProto::DOUBLE);
  t->add_dims(static_cast<int64_t>(v.size()));
  for (double x : v) t->add_double_data(x);
}
void remove_attr(onnx::NodeProto& n, const std::string& name) {
  auto* attrs = n.mutable_attribute();
  for (int k = 0; k < attrs->size(); ++k) {
    if (attrs->Get(k).name() == name) {
      attrs->DeleteSubrange(k, 1);
      return;
    }
  }
}

// A tree description: nodes and leaf weights.
struct Tree {
  std::vector<int64_t> treeids, nodeids, featureids, trueids, falseids, missing;
  std::vector<std::string> modes;
  std::vector<float> values;
  std::vector<int64_t> w_trees, w_nodes, w_ids;
  std::vector<float> w_values;

  Tree& branch(int64_t tree, int64_t node, int64_t feature, const std::string& mode, float value, int64_t t,
               int64_t f, int64_t miss = 0) {
    treeids.push_back(tree);
    nodeids.push_back(node);
    featureids.push_back(feature);
    modes.push_back(mode);
    values.push_back(value);
    trueids.push_back(t);
    falseids.push_back(f);
    missing.push_back(miss);
    return *this;
  }
  Tree& leaf(int64_t tree, int64_t node) {
    treeids.push_back(tree);
    nodeids.push_back(node);
    featureids.push_back(0);
    modes.push_back("LEAF");
    values.push_back(0);
    trueids.push_back(0);
    falseids.push_back(0);
    missing.push_back(0);
    return *this;
  }
  Tree& weight(int64_t tree, int64_t node, int64_t id, float w) {
    w_trees.push_back(tree);
    w_nodes.push_back(node);
    w_ids.push_back(id);
    w_values.push_back(w);
    return *this;
  }
  // Leaf with one weight for id 0.
  Tree& leaf_w(int64_t tree, int64_t node, float w) { return leaf(tree, node).weight(tree, node, 0, w); }

  onnx::NodeProto node(const std::string& op, const std::string& prefix) const {
    onnx::NodeProto n;
    n.set_op_type(op);
    n.set_domain("ai.onnx.ml");
    n.set_name("trees");
    n.add_input("X");
    if (op == "TreeEnsembleClassifier") {
      n.add_output("label");
      n.add_output("probabilities");
    } else {
      n.add_output("Y");
    }
    set_ints(n, "nodes_treeids", treeids);
    set_ints(n, "nodes_nodeids", nodeids);
    set_ints(n, "nodes_featureids", featureids);
    set_strings(n, "nodes_modes", modes);
    set_floats(n, "nodes_values", values);
    set_ints(n, "nodes_truenodeids", trueids);
    set_ints(n, "nodes_falsenodeids", falseids);
    set_ints(n, "nodes_missing_value_tracks_true", missing);
    set_ints(n, prefix + "_treeids", w_trees);
    set_ints(n, prefix + "_nodeids", w_nodes);
    set_ints(n, prefix + "_ids", w_ids);
    set_floats(n, prefix + "_weights", w_values);
    return n;
  }
  onnx::NodeProto regressor(int64_t n_targets = 1) const {
    onnx::NodeProto n = node("TreeEnsembleRegressor", "target");
    set_int(n, "n_targets", n_targets);
    return n;
  }
  onnx::NodeProto classifier(const std::vector<int64_t>& labels) const {
    onnx::NodeProto n = node("TreeEnsembleClassifier", "class");
    set_ints(n, "classlabels_int64s", labels);
    return n;
  }
};

std::unique_ptr<flock::Kernel> compile(const onnx::NodeProto& n, int64_t opset = 3) {
  static flock::KernelRegistry* registry = [] {
    auto* r = new flock::KernelRegistry();
    flock::register_ml_tree_kernels(*r);
    return r;
  }();
  const flock::KernelFactory* f = registry->find(n.domain(), n.op_type());
  if (!f) throw std::runtime_error("kernel not registered: " + n.op_type());
  flock::Attrs attrs(n);
  flock::KernelContext ctx{n, attrs, opset};
  return (*f)(ctx);
}

std::vector<Tensor> run(const flock::Kernel& k, const Tensor& x, size_t n_out) {
  std::vector<Tensor> out(n_out);
  k.run({&x}, out);
  return out;
}

Tensor rows(const std::vector<std::vector<float>>& r) {
  std::vector<float> v;
  for (const auto& row : r) v.insert(v.end(), row.begin(), row.end());
  return Tensor::floats({static_cast<int64_t>(r.size()), static_cast<int64_t>(r.empty() ? 0 : r[0].size())}, v);
}

ErrorCode code_of(const std::function<void()>& f, std::string* msg = nullptr) {
  try {
    f();
  } catch (const flock::Error& e) {
    if (msg) *msg = e.what();
    return e.code();
  }
  ADD_FAILURE() << "expected a flock::Error";
  return ErrorCode::Internal;
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Two trees used by several tests:
//   tree 0: x0 <= 0.5 ? (x1 <= 1 ? 1 : 2) : 10
//   tree 1: x1 < 2 ? 100 : 200
Tree two_trees() {
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0.5f, 1, 2)
      .branch(0, 1, 1, "BRANCH_LEQ", 1.0f, 3, 4)
      .leaf_w(0, 2, 10)
      .leaf_w(0, 3, 1)
      .leaf_w(0, 4, 2)
      .branch(1, 0, 1, "BRANCH_LT", 2.0f, 1, 2)
      .leaf_w(1, 1, 100)
      .leaf_w(1, 2, 200);
  return t;
}

// ------------------------------------------------------------------------------------------------
// Node modes and missing values

struct ModeCase {
  const char* mode;
  bool at_04, at_05, at_06, at_nan_false, at_nan_true;
};

TEST(TreeEnsemble, EveryModeAndMissingTrack) {
  const ModeCase cases[] = {
      {"BRANCH_LEQ", true, true, false, false, true}, {"BRANCH_LT", true, false, false, false, true},
      {"BRANCH_GTE", false, true, true, false, true}, {"BRANCH_GT", false, false, true, false, true},
      {"BRANCH_EQ", false, true, false, false, true},
      // NaN != 0.5 is true whatever the missing track says.
      {"BRANCH_NEQ", true, false, true, true, true},
  };
  for (const auto& c : cases) {
    for (int64_t miss : {0, 1}) {
      Tree t;
      t.branch(0, 0, 0, c.mode, 0.5f, 1, 2, miss).leaf_w(0, 1, 1.0f).leaf_w(0, 2, 2.0f);
      auto k = compile(t.regressor());
      auto out = run(*k, rows({{0.4f}, {0.5f}, {0.6f}, {kNaN}}), 1);
      ASSERT_EQ(out[0].shape, (std::vector<int64_t>{4, 1}));
      auto expect = [](bool yes) { return yes ? 1.0f : 2.0f; };
      EXPECT_EQ(out[0].f[0], expect(c.at_04)) << c.mode;
      EXPECT_EQ(out[0].f[1], expect(c.at_05)) << c.mode;
      EXPECT_EQ(out[0].f[2], expect(c.at_06)) << c.mode;
      EXPECT_EQ(out[0].f[3], expect(miss ? c.at_nan_true : c.at_nan_false)) << c.mode << " missing=" << miss;
    }
  }
}

TEST(TreeEnsemble, MixedModesInOneEnsemble) {
  Tree t;
  t.branch(0, 0, 0, "BRANCH_GT", 0.0f, 1, 2)
      .branch(0, 1, 1, "BRANCH_EQ", 3.0f, 3, 4, 1)
      .leaf_w(0, 2, -1)
      .leaf_w(0, 3, 5)
      .leaf_w(0, 4, 7);
  auto k = compile(t.regressor());
  auto out = run(*k, rows({{1, 3}, {1, 4}, {-1, 3}, {1, kNaN}, {kNaN, 3}}), 1);
  EXPECT_EQ(out[0].f, (std::vector<float>{5, 7, -1, 5, -1}));
}

TEST(TreeEnsemble, InputTypesAndOneDimensionalInput) {
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0.5f, 1, 2).leaf_w(0, 1, 1).leaf_w(0, 2, 2);
  auto k = compile(t.regressor());
  EXPECT_EQ(run(*k, Tensor::doubles({2, 1}, {0.25, 0.75}), 1)[0].f, (std::vector<float>{1, 2}));
  EXPECT_EQ(run(*k, Tensor::int64s({3, 1}, {0, 1, -4}), 1)[0].f, (std::vector<float>{1, 2, 1}));
  auto one = run(*k, Tensor::floats({3}, {0.9f, 0.0f, 0.0f}), 1)[0];  // [F] is one row
  EXPECT_EQ(one.shape, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(one.f, (std::vector<float>{2}));
  auto empty = run(*k, Tensor::floats({0, 1}, {}), 1)[0];
  EXPECT_EQ(empty.shape, (std::vector<int64_t>{0, 1}));
}

TEST(TreeEnsemble, ThresholdsComparedInInputType) {
  // nodes_values_as_tensor holds the double 0.1. Double input compares in double, float input
  // against the threshold rounded to float (ORT's ThresholdType).
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, 1).leaf_w(0, 2, 2);
  onnx::NodeProto n = t.regressor();
  remove_attr(n, "nodes_values");
  set_double_tensor(n, "nodes_values_as_tensor", {0.1, 0.0, 0.0});
  auto k = compile(n);
  EXPECT_EQ(run(*k, Tensor::doubles({2, 1}, {0.1, 0.1000000005}), 1)[0].f, (std::vector<float>{1, 2}));
  EXPECT_EQ(run(*k, Tensor::floats({2, 1}, {0.1f, static_cast<float>(0.1000000005)}), 1)[0].f,
            (std::vector<float>{1, 1}));
}

// ------------------------------------------------------------------------------------------------
// Regressor aggregation and transforms

TEST(TreeEnsemble, RegressorAggregates) {
  const auto x = rows({{0, 0}, {1, 3}, {0, 1.5f}});
  // leaves: row0 -> 1, 100; row1 -> 10, 200; row2 -> 2, 100
  struct Case {
    const char* agg;
    std::vector<float> expect;
  } cases[] = {
      {"SUM", {101, 210, 102}}, {"AVERAGE", {50.5f, 105, 51}}, {"MIN", {1, 10, 2}}, {"MAX", {100, 200, 100}}};
  for (const auto& c : cases) {
    for (bool with_base : {false, true}) {
      onnx::NodeProto n = two_trees().regressor();
      set_string(n, "aggregate_function", c.agg);
      if (with_base) set_floats(n, "base_values", {0.5f});
      auto out = run(*compile(n), x, 1)[0];
      for (size_t r = 0; r < 3; ++r) EXPECT_FLOAT_EQ(out.f[r], c.expect[r] + (with_base ? 0.5f : 0.f)) << c.agg;
    }
  }
}

TEST(TreeEnsemble, RegressorBaseValuesAsTensor) {
  onnx::NodeProto n = two_trees().regressor();
  set_double_tensor(n, "base_values_as_tensor", {-1.0});
  EXPECT_EQ(run(*compile(n), rows({{0, 0}}), 1)[0].f, (std::vector<float>{100}));
}

TEST(TreeEnsemble, SingleTargetAppliesOnlyProbit) {
  // ORT's FinalizeScores1 applies PROBIT and ignores LOGISTIC/SOFTMAX for one target.
  Tree t;
  t.leaf_w(0, 0, 0.3f);
  for (const char* tr : {"NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"}) {
    onnx::NodeProto n = t.regressor();
    set_string(n, "post_transform", tr);
    EXPECT_FLOAT_EQ(run(*compile(n), rows({{0}}), 1)[0].f[0], 0.3f) << tr;
  }
  onnx::NodeProto n = t.regressor();
  set_string(n, "post_transform", "PROBIT");
  // probit(0.3) = sqrt(2) * erfinv(-0.4) ~= -0.5244 (ORT's approximation of erfinv)
  EXPECT_NEAR(run(*compile(n), rows({{0}}), 1)[0].f[0], -0.5244, 2e-3);
}

TEST(TreeEnsemble, SingleTargetUsesFirstWeightOfLeaf) {
  Tree t;
  t.leaf(0, 0).weight(0, 0, 0, 2.0f).weight(0, 0, 0, 5.0f);
  EXPECT_EQ(run(*compile(t.regressor(1)), rows({{0}}), 1)[0].f, (std::vector<float>{2}));
}

Tree multi_target_tree() {
  // x0 <= 0 ? leaf1 {t0: 1, t1: 2} : leaf2 {t0: 3}   (leaf2 has no weight for target 1)
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf(0, 1).weight(0, 1, 0, 1).weight(0, 1, 1, 2).leaf(0, 2).weight(0, 2, 0, 3);
  t.leaf(1, 0).weight(1, 0, 0, 0.5f).weight(1, 0, 1, -0.5f);  // tree 1: one leaf for both
  return t;
}

TEST(TreeEnsemble, MultiTargetSumAverageMinMax) {
  const auto x = rows({{-1}, {1}});
  onnx::NodeProto n = multi_target_tree().regressor(2);
  auto out = run(*compile(n), x, 1)[0];
  ASSERT_EQ(out.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(out.f, (std::vector<float>{1.5f, 1.5f, 3.5f, -0.5f}));

  n = multi_target_tree().regressor(2);
  set_string(n, "aggregate_function", "AVERAGE");
  set_floats(n, "base_values", {10, 20});
  EXPECT_EQ(run(*compile(n), x, 1)[0].f, (std::vector<float>{10.75f, 20.75f, 11.75f, 19.75f}));

  n = multi_target_tree().regressor(2);
  set_string(n, "aggregate_function", "MIN");
  EXPECT_EQ(run(*compile(n), x, 1)[0].f, (std::vector<float>{0.5f, -0.5f, 0.5f, -0.5f}));

  n = multi_target_tree().regressor(2);
  set_string(n, "aggregate_function", "MAX");
  EXPECT_EQ(run(*compile(n), x, 1)[0].f, (std::vector<float>{1, 2, 3, -0.5f}));
}

TEST(TreeEnsemble, MultiTargetUnscoredTargetReadsZero) {
  // Only tree 0 of multi_target_tree: row x0 = 1 reaches leaf2, which has no weight for target 1.
  // ORT adds base_values but then writes 0 for a target no leaf wrote to.
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf(0, 1).weight(0, 1, 0, 1).weight(0, 1, 1, 2).leaf(0, 2).weight(0, 2, 0, 3);
  onnx::NodeProto n = t.regressor(2);
  set_floats(n, "base_values", {10, 20});
  EXPECT_EQ(run(*compile(n), rows({{-1}, {1}}), 1)[0].f, (std::vector<float>{11, 22, 13, 0}));
}

TEST(TreeEnsemble, MultiTargetTransforms) {
  const auto x = rows({{-1}});
  Tree t;
  t.leaf(0, 0).weight(0, 0, 0, 1.0f).weight(0, 0, 1, -2.0f).weight(0, 0, 2, 0.0f);
  auto eval = [&](const char* tr) {
    onnx::NodeProto n = t.regressor(3);
    set_string(n, "post_transform", tr);
    return run(*compile(n), x, 1)[0].f;
  };
  auto none = eval("NONE");
  EXPECT_EQ(none, (std::vector<float>{1, -2, 0}));
  auto lg = eval("LOGISTIC");
  EXPECT_NEAR(lg[0], sigmoid(1), 1e-6);
  EXPECT_NEAR(lg[1], sigmoid(-2), 1e-6);
  EXPECT_NEAR(lg[2], 0.5, 1e-6);
  auto sm = eval("SOFTMAX");
  const double z = std::exp(1.0) + std::exp(-2.0) + 1.0;
  EXPECT_NEAR(sm[0], std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(sm[1], std::exp(-2.0) / z, 1e-6);
  EXPECT_NEAR(sm[2], 1.0 / z, 1e-6);
  auto sz = eval("SOFTMAX_ZERO");  // zero scores stay zero
  const double z0 = std::exp(1.0) + std::exp(-2.0);
  EXPECT_NEAR(sz[0], std::exp(1.0) / z0, 1e-6);
  EXPECT_NEAR(sz[1], std::exp(-2.0) / z0, 1e-6);
  EXPECT_EQ(sz[2], 0.0f);
  auto pr = eval("PROBIT");  // probit maps (0, 1); ORT's erfinv gives +-inf at the ends, NaN outside
  EXPECT_EQ(pr[0], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(pr[1]));
  EXPECT_EQ(pr[2], -std::numeric_limits<float>::infinity());
}

// Batches walk 8 rows per tree at a time in blocks of 128 rows, single rows walk 8 trees at a
// time: every path must give the row-by-row result.
void expect_batch_matches_rows(const onnx::NodeProto& n, size_t n_out, bool as_double) {
  auto k = compile(n);
  std::mt19937 gen(42);
  std::uniform_real_distribution<float> u(-1, 3);
  const int64_t rows_n = 300, cols = 3;
  std::vector<float> v(static_cast<size_t>(rows_n * cols));
  for (auto& e : v) e = u(gen);
  for (size_t r = 0; r < static_cast<size_t>(rows_n); r += 7) v[r * cols + 2] = kNaN;
  auto make = [&](int64_t r0, int64_t count) {
    std::vector<float> part(v.begin() + r0 * cols, v.begin() + (r0 + count) * cols);
    if (!as_double) return Tensor::floats({count, cols}, part);
    return Tensor::doubles({count, cols}, std::vector<double>(part.begin(), part.end()));
  };
  auto all = run(*k, make(0, rows_n), n_out);
  const size_t width = static_cast<size_t>(all[n_out - 1].cols());
  for (int64_t r = 0; r < rows_n; ++r) {
    auto one = run(*k, make(r, 1), n_out);
    for (size_t c = 0; c < width; ++c) {
      const float a = all[n_out - 1].f[static_cast<size_t>(r) * width + c], b = one[n_out - 1].f[c];
      ASSERT_TRUE(a == b || (std::isnan(a) && std::isnan(b))) << "row " << r << " col " << c;
    }
    if (n_out == 2) {
      ASSERT_EQ(all[0].i[static_cast<size_t>(r)], one[0].i[0]) << "row " << r;
    }
  }
}

Tree many_trees() {
  Tree t = two_trees();
  t.branch(2, 0, 2, "BRANCH_GTE", 0.0f, 1, 2, 1).leaf_w(2, 1, 0.25f).leaf_w(2, 2, -0.25f);
  for (int64_t k = 3; k < 14; ++k) {  // more than 8 trees, mixed modes, depth 2
    const float th = 0.1f * static_cast<float>(k);
    t.branch(k, 0, k % 3, k % 2 ? "BRANCH_LT" : "BRANCH_GT", th, 1, 2, k % 2)
        .branch(k, 1, (k + 1) % 3, "BRANCH_LEQ", 1.0f, 3, 4)
        .leaf(k, 2).weight(k, 2, k % 3, th).weight(k, 2, (k + 1) % 3, -th)
        .leaf(k, 3).weight(k, 3, 0, 1.0f / static_cast<float>(k))
        .leaf(k, 4).weight(k, 4, 2, -0.5f);
  }
  return t;
}

TEST(TreeEnsemble, LargeBatchMatchesRowByRow) {
  for (const char* agg : {"SUM", "AVERAGE", "MIN", "MAX"}) {
    SCOPED_TRACE(agg);
    onnx::NodeProto n = many_trees().regressor(3);
    set_string(n, "aggregate_function", agg);
    set_string(n, "post_transform", "SOFTMAX");
    expect_batch_matches_rows(n, 1, false);
    expect_batch_matches_rows(n, 1, true);
  }
  Tree single = two_trees();
  single.branch(2, 0, 2, "BRANCH_GTE", 0.0f, 1, 2, 1).leaf_w(2, 1, 0.25f).leaf_w(2, 2, -0.25f);
  expect_batch_matches_rows(single.regressor(), 1, false);
  onnx::NodeProto c = many_trees().classifier({7, 8, 9});
  set_string(c, "post_transform", "SOFTMAX");
  expect_batch_matches_rows(c, 2, false);
  expect_batch_matches_rows(c, 2, true);
}

TEST(TreeEnsemble, NonContiguousIdsAndOrder) {
  // Node ids need not be sequential or ordered; the root is the first node listed for a tree.
  Tree t;
  t.branch(7, 40, 0, "BRANCH_LEQ", 0.5f, 12, 3).leaf_w(7, 3, 2).leaf_w(7, 12, 1);
  EXPECT_EQ(run(*compile(t.regressor()), rows({{0}, {1}}), 1)[0].f, (std::vector<float>{1, 2}));
}

TEST(TreeEnsemble, WeightsOnBranchNodesAreIgnored) {
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0.5f, 1, 2).leaf_w(0, 1, 1).leaf_w(0, 2, 2).weight(0, 0, 0, 100);
  EXPECT_EQ(run(*compile(t.regressor()), rows({{0}, {1}}), 1)[0].f, (std::vector<float>{1, 2}));
}

TEST(TreeEnsemble, LeafWithoutWeights) {
  // Recent ORT accepts a leaf without weights: with one target it adds the leaf's nodes_values
  // entry, with several it adds nothing.
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, 1).leaf(0, 2);
  t.values[2] = 0.25f;
  EXPECT_EQ(run(*compile(t.regressor()), rows({{-1}, {1}}), 1)[0].f, (std::vector<float>{1, 0.25f}));
  onnx::NodeProto n = t.regressor(2);
  set_floats(n, "base_values", {3, 4});
  EXPECT_EQ(run(*compile(n), rows({{-1}, {1}}), 1)[0].f, (std::vector<float>{4, 0, 0, 0}));
}

// ------------------------------------------------------------------------------------------------
// Classifier

Tree three_class_tree() {
  // x0 <= 0 ? {c0: 2, c1: 1} : {c1: 0.5, c2: 3}
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2)
      .leaf(0, 1)
      .weight(0, 1, 0, 2)
      .weight(0, 1, 1, 1)
      .leaf(0, 2)
      .weight(0, 2, 1, 0.5f)
      .weight(0, 2, 2, 3);
  return t;
}

TEST(TreeEnsembleClassifier, MulticlassSoftmaxAndLabels) {
  onnx::NodeProto n = three_class_tree().classifier({10, 20, 30});
  set_string(n, "post_transform", "SOFTMAX");
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  ASSERT_EQ(out[0].type, ElemType::Int64);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{10, 30}));
  ASSERT_EQ(out[1].shape, (std::vector<int64_t>{2, 3}));
  // Row 0 scores {2, 1, unscored = 0}.
  const double z = std::exp(2.0) + std::exp(1.0) + 1.0;
  EXPECT_NEAR(out[1].f[0], std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(out[1].f[1], std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(out[1].f[2], 1.0 / z, 1e-6);
}

TEST(TreeEnsembleClassifier, MulticlassBaseValuesAndNone) {
  onnx::NodeProto n = three_class_tree().classifier({0, 1, 2});
  set_floats(n, "base_values", {0.0f, 0.0f, 2.5f});
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{2, 2}));  // 2.5 beats 2 on row 0
  EXPECT_EQ(out[1].f, (std::vector<float>{2, 1, 2.5f, 0, 0.5f, 5.5f}));
}

TEST(TreeEnsembleClassifier, MulticlassTiesPickFirstClass) {
  Tree t;
  t.leaf(0, 0).weight(0, 0, 1, 1).weight(0, 0, 2, 1);
  auto out = run(*compile(t.classifier({5, 6, 7})), rows({{0}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{6}));  // class 0 has no score and is skipped
}

TEST(TreeEnsembleClassifier, StringLabels) {
  onnx::NodeProto n = three_class_tree().node("TreeEnsembleClassifier", "class");
  set_strings(n, "classlabels_strings", {"setosa", "versicolor", "virginica"});
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  ASSERT_EQ(out[0].type, ElemType::String);
  EXPECT_EQ(out[0].s, (std::vector<std::string>{"setosa", "virginica"}));
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{2}));
}

Tree binary_margin_tree() {
  // One score on class 0 (XGBoost style): x0 <= 0 ? -1.5 : 0.75
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, -1.5f).leaf_w(0, 2, 0.75f);
  return t;
}

TEST(TreeEnsembleClassifier, BinarySingleScoreLogistic) {
  onnx::NodeProto n = binary_margin_tree().classifier({0, 1});
  set_string(n, "post_transform", "LOGISTIC");
  set_floats(n, "base_values", {0.5f});
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{0, 1}));  // margins -1 and 1.25
  ASSERT_EQ(out[1].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_NEAR(out[1].f[0], 1 - sigmoid(-1.0f), 1e-6);
  EXPECT_NEAR(out[1].f[1], sigmoid(-1.0f), 1e-6);
  EXPECT_NEAR(out[1].f[2], 1 - sigmoid(1.25f), 1e-6);
  EXPECT_NEAR(out[1].f[3], sigmoid(1.25f), 1e-6);
}

TEST(TreeEnsembleClassifier, BinarySingleScoreNoneAndStringLabels) {
  onnx::NodeProto n = binary_margin_tree().node("TreeEnsembleClassifier", "class");
  set_strings(n, "classlabels_strings", {"no", "yes"});
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  EXPECT_EQ(out[0].s, (std::vector<std::string>{"no", "yes"}));
  EXPECT_EQ(out[1].f, (std::vector<float>{1.5f, -1.5f, -0.75f, 0.75f}));  // [-s, s]
}

TEST(TreeEnsembleClassifier, BinarySingleScoreProbit) {
  onnx::NodeProto n = binary_margin_tree().classifier({0, 1});
  set_string(n, "post_transform", "PROBIT");
  set_floats(n, "base_values", {1.0f});
  auto out = run(*compile(n), rows({{1}}), 2);  // score 1.75 -> probit undefined -> NaN, slot 1 untouched
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{1}));
  EXPECT_TRUE(std::isnan(out[1].f[0]));
  EXPECT_EQ(out[1].f[1], 0.0f);
}

TEST(TreeEnsembleClassifier, BinaryAllPositiveWeightsAreProbabilities) {
  // Random-forest style: one class id, weights in [0, 1]. ORT writes [1 - p, p] without any
  // transform (even LOGISTIC) and picks the positive label when p > 0.5.
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, 0.25f).leaf_w(0, 2, 0.75f);
  onnx::NodeProto n = t.classifier({4, 9});
  set_string(n, "post_transform", "LOGISTIC");
  auto out = run(*compile(n), rows({{-1}, {1}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(out[1].f, (std::vector<float>{0.75f, 0.25f, 0.25f, 0.75f}));
}

TEST(TreeEnsembleClassifier, BinaryBothClassesWeighted) {
  // Weights for both class ids, no base values: scores as they are. ORT's label would be the
  // literal 1 / 0; Flock takes the argmax, mapped to classlabels_int64s (see ml_tree.cpp).
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2)
      .leaf(0, 1)
      .weight(0, 1, 0, 0.8f)
      .weight(0, 1, 1, 0.2f)
      .leaf(0, 2)
      .weight(0, 2, 0, 0.1f)
      .weight(0, 2, 1, 0.0f);
  auto out = run(*compile(t.classifier({3, 7})), rows({{-1}, {1}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(out[1].f, (std::vector<float>{0.8f, 0.2f, 0.1f, 0.0f}));
}

TEST(TreeEnsembleClassifier, BinaryTwoBaseValuesWithClassOneScore) {
  // base_values of size 2 and a class-1 score: ORT sets s1 = base[1] + s0 and s0 = -s1.
  Tree t;
  t.leaf(0, 0).weight(0, 0, 0, 0.5f).weight(0, 0, 1, 123.0f);
  onnx::NodeProto n = t.classifier({0, 1});
  set_floats(n, "base_values", {0.25f, 0.25f});
  set_string(n, "post_transform", "LOGISTIC");
  auto out = run(*compile(n), rows({{0}}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{1}));
  EXPECT_NEAR(out[1].f[0], sigmoid(-0.75f), 1e-6);
  EXPECT_NEAR(out[1].f[1], sigmoid(0.75f), 1e-6);
}

TEST(TreeEnsembleClassifier, BinaryTwoBaseValuesWithoutClassOneScore) {
  // base_values of size 2, only class 0 weighted in this row: both base values are added and
  // class 1 (never scored) reads 0.
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, 2.0f).leaf(0, 2).weight(0, 2, 1, 1.0f);
  onnx::NodeProto n = t.classifier({0, 1});
  set_floats(n, "base_values", {1.0f, 5.0f});
  auto out = run(*compile(n), rows({{-1}}), 2);
  EXPECT_EQ(out[1].f, (std::vector<float>{3.0f, 0.0f}));
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{0}));  // argmax of [3, 0]
}

TEST(TreeEnsembleClassifier, DoubleInputAndTensorWeights) {
  onnx::NodeProto n = binary_margin_tree().classifier({0, 1});
  remove_attr(n, "class_weights");
  set_double_tensor(n, "class_weights_as_tensor", {-1.5, 0.75});
  set_string(n, "post_transform", "LOGISTIC");
  auto out = run(*compile(n), Tensor::doubles({1, 1}, {2.0}), 2);
  EXPECT_EQ(out[0].i, (std::vector<int64_t>{1}));
  EXPECT_NEAR(out[1].f[1], sigmoid(0.75f), 1e-6);
}

// ------------------------------------------------------------------------------------------------
// Random ensembles against a reference walk (ORT semantics, one row and one tree at a time).
// Float input with one branch mode per ensemble takes the perfect-tree path (padding, NaN columns,
// row groups of 16, tree groups of 8 for fewer than 8 rows); mixed modes and deep trees take the
// flat-node walk. Every path must give the reference bits.

struct RefTree {
  // Node k: feature < 0 for a leaf.
  std::vector<int64_t> feature, yes, no, missing;
  std::vector<float> thr;
  std::vector<std::string> mode;
  std::vector<std::vector<std::pair<int64_t, float>>> weights;  // leaves: (id, value)
};

bool ref_go_true(const std::string& mode, float x, float t, bool missing_true) {
  bool r;
  if (mode == "BRANCH_LEQ") r = x <= t;
  else if (mode == "BRANCH_LT") r = x < t;
  else if (mode == "BRANCH_GTE") r = x >= t;
  else if (mode == "BRANCH_GT") r = x > t;
  else if (mode == "BRANCH_EQ") r = x == t;
  else r = x != t;
  return r || (std::isnan(x) && missing_true);
}

int64_t ref_leaf(const RefTree& t, const float* row) {
  int64_t k = 0;
  while (t.feature[static_cast<size_t>(k)] >= 0) {
    const size_t i = static_cast<size_t>(k);
    k = ref_go_true(t.mode[i], row[t.feature[i]], t.thr[i], t.missing[i] != 0) ? t.yes[i] : t.no[i];
  }
  return k;
}

struct RandomForestSpec {
  int n_trees = 20;
  int max_depth = 6;
  int n_features = 5;
  int n_ids = 1;              // targets / classes the weights use
  int weights_per_leaf = 1;   // 0: leaves without weights (regressor uses nodes_values 0)
  bool mixed_modes = false;
  const char* mode = "BRANCH_LT";
  bool infinite_thresholds = false;
  bool chain = false;  // every false child a leaf: trees exactly max_depth deep with few nodes
  bool full = false;   // no leaf above max_depth: complete trees
  uint32_t seed = 1;
};

std::vector<RefTree> random_forest(const RandomForestSpec& s) {
  std::mt19937 gen(s.seed);
  std::uniform_real_distribution<float> u(-2, 2);
  const char* modes[] = {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"};
  std::vector<RefTree> trees;
  for (int t = 0; t < s.n_trees; ++t) {
    RefTree tr;
    // depth-first build; a node is a leaf with probability growing with depth
    std::function<int64_t(int, bool)> grow = [&](int depth, bool force_leaf) -> int64_t {
      const int64_t k = static_cast<int64_t>(tr.feature.size());
      tr.feature.push_back(-1);
      tr.yes.push_back(0);
      tr.no.push_back(0);
      tr.missing.push_back(0);
      tr.thr.push_back(0);
      tr.mode.push_back("LEAF");
      tr.weights.emplace_back();
      const bool leaf = force_leaf || depth >= s.max_depth ||
                        (!s.chain && !s.full && depth > 0 && gen() % 100 < static_cast<uint32_t>(10 + 8 * depth));
      if (leaf) {
        for (int w = 0; w < s.weights_per_leaf; ++w)
          tr.weights[static_cast<size_t>(k)].push_back({static_cast<int64_t>(gen() % s.n_ids), u(gen)});
        return k;
      }
      const size_t i = static_cast<size_t>(k);
      tr.feature[i] = static_cast<int64_t>(gen() % s.n_features);
      float th = std::round(u(gen) * 4) / 4;  // coarse: rows often hit a threshold exactly
      if (s.infinite_thresholds && gen() % 5 == 0)
        th = gen() % 2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
      tr.thr[i] = th;
      tr.mode[i] = s.mixed_modes ? modes[gen() % 4] : s.mode;
      tr.missing[i] = gen() % 2;
      const int64_t y = grow(depth + 1, false);
      const int64_t n = grow(depth + 1, s.chain);
      tr.yes[i] = y;
      tr.no[i] = n;
      return k;
    };
    grow(0, false);
    trees.push_back(std::move(tr));
  }
  return trees;
}

Tree to_tree(const std::vector<RefTree>& trees) {
  Tree t;
  for (size_t ti = 0; ti < trees.size(); ++ti) {
    const RefTree& r = trees[ti];
    const int64_t id = static_cast<int64_t>(ti);
    for (size_t k = 0; k < r.feature.size(); ++k) {
      const int64_t node = static_cast<int64_t>(k);
      if (r.feature[k] < 0) {
        t.leaf(id, node);
        for (const auto& [w_id, w] : r.weights[k]) t.weight(id, node, w_id, w);
      } else {
        t.branch(id, node, r.feature[k], r.mode[k], r.thr[k], r.yes[k], r.no[k], r.missing[k]);
      }
    }
  }
  return t;
}

// Rows with NaN, +-inf, exact threshold hits and -0.
std::vector<float> random_rows(int64_t n, int cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-2.5f, 2.5f);
  std::vector<float> v(static_cast<size_t>(n * cols));
  for (auto& x : v) {
    const uint32_t c = gen() % 20;
    if (c == 0) x = kNaN;
    else if (c == 1) x = std::numeric_limits<float>::infinity();
    else if (c == 2) x = -std::numeric_limits<float>::infinity();
    else if (c == 3) x = std::round(u(gen) * 4) / 4;
    else if (c == 4) x = -0.0f;
    else x = u(gen);
  }
  return v;
}

// Regressor, one target, SUM: the sum in tree order (double, each leaf value as float), plus base.
void expect_regressor_matches_reference(const RandomForestSpec& s) {
  const auto trees = random_forest(s);
  onnx::NodeProto n = to_tree(trees).regressor(1);
  set_floats(n, "base_values", {0.125f});
  auto k = compile(n);
  for (int64_t rows_n : {1, 3, 7, 8, 15, 16, 17, 100, 128, 129, 300}) {
    const auto v = random_rows(rows_n, s.n_features, s.seed * 1000 + static_cast<uint32_t>(rows_n));
    auto out = run(*k, Tensor::floats({rows_n, s.n_features}, v), 1)[0];
    for (int64_t r = 0; r < rows_n; ++r) {
      double sum = 0;
      for (const auto& t : trees) {
        const auto& w = t.weights[static_cast<size_t>(ref_leaf(t, &v[static_cast<size_t>(r * s.n_features)]))];
        sum += w.empty() ? 0.0 : static_cast<double>(w[0].second);
      }
      const float want = static_cast<float>(sum + 0.125);
      ASSERT_EQ(out.f[static_cast<size_t>(r)], want) << "rows " << rows_n << " row " << r;
    }
  }
}

// Every TreeEnsembleFast test runs twice: with the AVX-512 walk (skipped on a CPU without AVX-512F)
// and with the portable one. Both must give the reference bits.
class TreeEnsembleFast : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam() && !flock::tree::simd_walk_available()) GTEST_SKIP() << "no AVX-512F on this CPU";
    ASSERT_EQ(flock::tree::set_simd_walk(GetParam()), GetParam());
  }
  void TearDown() override { flock::tree::set_simd_walk(flock::tree::simd_walk_available()); }
};

INSTANTIATE_TEST_SUITE_P(Walk, TreeEnsembleFast, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "Avx512" : "Portable"; });

TEST_P(TreeEnsembleFast, EveryModeMatchesReference) {
  for (const char* mode : {"BRANCH_LT", "BRANCH_LEQ", "BRANCH_GTE", "BRANCH_GT"}) {
    for (uint32_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(std::string(mode) + " seed " + std::to_string(seed));
      RandomForestSpec s;
      s.mode = mode;
      s.seed = seed;
      s.n_trees = 21;  // not a multiple of the tree group
      expect_regressor_matches_reference(s);
      s.infinite_thresholds = true;  // LEQ +inf / GTE -inf with missing->false fall back to the walk
      expect_regressor_matches_reference(s);
    }
  }
}

TEST_P(TreeEnsembleFast, DepthsAndShapes) {
  RandomForestSpec s;
  s.max_depth = 0;  // single-leaf trees
  expect_regressor_matches_reference(s);
  s.max_depth = 1;
  expect_regressor_matches_reference(s);
  s.max_depth = 12;  // deepest perfect layout
  s.n_trees = 5;
  expect_regressor_matches_reference(s);
  s.chain = true;
  s.max_depth = 12;
  expect_regressor_matches_reference(s);
  s.max_depth = 16;  // too deep: flat-node walk
  expect_regressor_matches_reference(s);
  s.chain = false;
  s.max_depth = 6;
  s.mixed_modes = true;  // mixed modes: flat-node walk
  s.n_trees = 30;
  expect_regressor_matches_reference(s);
  s.mixed_modes = false;
  s.weights_per_leaf = 0;  // leaves without weights add their nodes_values entry (0)
  expect_regressor_matches_reference(s);
}

TEST_P(TreeEnsembleFast, SharedSubtreesAndSingleRows) {
  // A node reached from two parents (allowed by the attribute form) is laid out on both paths.
  Tree t;
  t.branch(0, 0, 0, "BRANCH_LT", 0.0f, 1, 2)
      .branch(0, 1, 1, "BRANCH_LT", 0.0f, 3, 2)
      .branch(0, 2, 1, "BRANCH_LT", 1.0f, 3, 4, 1)
      .leaf_w(0, 3, 1)
      .leaf_w(0, 4, 2);
  auto k = compile(t.regressor());
  EXPECT_EQ(run(*k, rows({{-1, -1}, {-1, 0.5f}, {-1, 2}, {1, 0.5f}, {1, 2}, {kNaN, kNaN}}), 1)[0].f,
            (std::vector<float>{1, 1, 2, 1, 2, 1}));
}

// Classifier with several classes, one weight per leaf (every tree adds to its own class, like
// XGBoost's multi-class trees) or several (weight lists): probabilities and labels against the
// reference sums.
TEST_P(TreeEnsembleFast, ClassifierMatchesReference) {
  for (int weights_per_leaf : {1, 2}) {
    for (const char* mode : {"BRANCH_LT", "BRANCH_GTE"}) {
      SCOPED_TRACE(std::string(mode) + " weights per leaf " + std::to_string(weights_per_leaf));
      RandomForestSpec s;
      s.mode = mode;
      s.n_trees = 19;
      s.n_ids = 3;
      s.weights_per_leaf = weights_per_leaf;
      auto trees = random_forest(s);
      if (weights_per_leaf == 1) {  // each tree on one class
        for (size_t ti = 0; ti < trees.size(); ++ti)
          for (auto& w : trees[ti].weights)
            for (auto& p : w) p.first = static_cast<int64_t>(ti % 3);
      }
      onnx::NodeProto n = to_tree(trees).classifier({10, 20, 30});
      set_string(n, "post_transform", "NONE");
      auto k = compile(n);
      for (int64_t rows_n : {1, 5, 16, 130}) {
        const auto v = random_rows(rows_n, s.n_features, 77 + static_cast<uint32_t>(rows_n));
        auto out = run(*k, Tensor::floats({rows_n, s.n_features}, v), 2);
        for (int64_t r = 0; r < rows_n; ++r) {
          double sum[3] = {0, 0, 0};
          bool has[3] = {false, false, false};
          for (const auto& t : trees)
            for (const auto& [id, w] : t.weights[static_cast<size_t>(ref_leaf(t, &v[static_cast<size_t>(r * s.n_features)]))]) {
              sum[id] += static_cast<double>(w);
              has[id] = true;
            }
          int best = -1;
          for (int c = 0; c < 3; ++c) {
            const float want = has[c] ? static_cast<float>(sum[c]) : 0.0f;
            ASSERT_EQ(out[1].f[static_cast<size_t>(r * 3 + c)], want) << "rows " << rows_n << " row " << r;
            if (has[c] && (best < 0 || sum[c] > sum[best])) best = c;
          }
          EXPECT_EQ(out[0].i[static_cast<size_t>(r)], (best < 0 ? 0 : best) * 10 + 10) << "row " << r;
        }
      }
    }
  }
}

TEST_P(TreeEnsembleFast, MinMaxAndMultiTargetThroughPerfectLayout) {
  RandomForestSpec s;
  s.n_trees = 12;
  s.n_ids = 2;
  auto trees = random_forest(s);
  for (const char* agg : {"MIN", "MAX", "SUM", "AVERAGE"}) {
    SCOPED_TRACE(agg);
    onnx::NodeProto n = to_tree(trees).regressor(2);
    set_string(n, "aggregate_function", agg);
    auto k = compile(n);
    const int64_t rows_n = 40;
    const auto v = random_rows(rows_n, s.n_features, 5);
    auto out = run(*k, Tensor::floats({rows_n, s.n_features}, v), 1)[0];
    for (int64_t r = 0; r < rows_n; ++r) {
      double acc[2] = {0, 0};
      bool has[2] = {false, false};
      for (const auto& t : trees) {
        for (const auto& [id, w] : t.weights[static_cast<size_t>(ref_leaf(t, &v[static_cast<size_t>(r * s.n_features)]))]) {
          const double x = w;
          if (std::string(agg) == "MIN") acc[id] = has[id] ? std::min(acc[id], x) : x;
          else if (std::string(agg) == "MAX") acc[id] = has[id] ? std::max(acc[id], x) : x;
          else acc[id] += x;
          has[id] = true;
        }
      }
      for (int c = 0; c < 2; ++c) {
        double val = acc[c];
        if (std::string(agg) == "AVERAGE") val /= static_cast<double>(trees.size());
        const float want = has[c] ? static_cast<float>(val) : 0.0f;
        ASSERT_EQ(out.f[static_cast<size_t>(r * 2 + c)], want) << "row " << r << " target " << c;
      }
    }
  }
}

// The AVX-512 walk (whole trees up to depth 6 evaluated QuickScorer style, the top five levels of
// deeper ones, leaf values picked by permutes and added in vectors) against the portable walk, bit
// for bit: random ensembles of depth 0 to 9 (sparse, chains and complete trees) in every mode,
// inputs with NaN, infinities and -0, row counts around the row group and the block; a regressor
// (one target), XGBoost's binary classifier (every weight on class 0, two outputs per row), a
// two-target regressor whose weights are not floats, and three classes (each tree on one).
TEST(TreeEnsembleSimdWalk, MatchesPortableWalkBitForBit) {
  if (!flock::tree::simd_walk_available()) GTEST_SKIP() << "no AVX-512F on this CPU";
  struct RestoreWalk {
    ~RestoreWalk() { flock::tree::set_simd_walk(flock::tree::simd_walk_available()); }
  } restore;
  auto bits = [](const Tensor& t) {
    std::vector<uint64_t> b;
    for (float v : t.f) b.push_back(std::bit_cast<uint32_t>(v));
    for (double v : t.d) b.push_back(std::bit_cast<uint64_t>(v));
    for (int64_t v : t.i) b.push_back(static_cast<uint64_t>(v));
    return b;
  };
  auto float_attr = [](const onnx::NodeProto& n, const std::string& name) {
    for (const auto& a : n.attribute())
      if (a.name() == name) return std::vector<float>(a.floats().begin(), a.floats().end());
    return std::vector<float>{};
  };
  int compared = 0;
  for (int depth = 0; depth <= 9; ++depth) {
    for (int shape = 0; shape < 3; ++shape) {
      for (const char* mode : {"BRANCH_LT", "BRANCH_LEQ", "BRANCH_GTE", "BRANCH_GT"}) {
        SCOPED_TRACE(std::string(mode) + " depth " + std::to_string(depth) + " shape " + std::to_string(shape));
        RandomForestSpec s;
        s.max_depth = depth;
        s.mode = mode;
        s.n_trees = depth > 7 ? 4 : 11;
        s.n_features = 7;
        s.chain = shape == 1;
        s.full = shape == 2;
        s.seed = static_cast<uint32_t>(1000 + 10 * depth + shape);
        const auto trees = random_forest(s);
        std::vector<std::pair<onnx::NodeProto, size_t>> kernels;  // node, outputs
        kernels.emplace_back(to_tree(trees).regressor(1), 1);
        auto on_class = [&](int n_ids) {
          auto t = trees;
          for (size_t ti = 0; ti < t.size(); ++ti)
            for (auto& w : t[ti].weights)
              for (auto& p : w) p.first = static_cast<int64_t>(ti % static_cast<size_t>(n_ids));
          return t;
        };
        onnx::NodeProto binary = to_tree(on_class(1)).classifier({0, 1});
        set_string(binary, "post_transform", "LOGISTIC");
        set_floats(binary, "base_values", {0.25f});
        kernels.emplace_back(binary, 2);
        onnx::NodeProto two = to_tree(on_class(2)).regressor(2);
        std::vector<double> weights;
        for (float w : float_attr(two, "target_weights")) weights.push_back(static_cast<double>(w) + 1.0 / 3 * 1e-7);
        remove_attr(two, "target_weights");
        set_double_tensor(two, "target_weights_as_tensor", weights);
        kernels.emplace_back(two, 1);
        kernels.emplace_back(to_tree(on_class(3)).classifier({7, 8, 9}), 2);
        // Every tree on target 1 of two: summed in a column of its own (Fast::one_target), which
        // must also give the reference sums, target 0 reading 0.
        auto on_target1 = trees;
        for (auto& t : on_target1)
          for (auto& w : t.weights)
            for (auto& p : w) p.first = 1;
        {
          auto k = compile(to_tree(on_target1).regressor(2));
          for (int64_t rows_n : {5, 130}) {
            const auto v = random_rows(rows_n, s.n_features, s.seed + 7 * static_cast<uint32_t>(rows_n));
            for (bool simd : {true, false}) {
              flock::tree::set_simd_walk(simd);
              const auto out = run(*k, Tensor::floats({rows_n, s.n_features}, v), 1)[0];
              for (int64_t r = 0; r < rows_n; ++r) {
                double sum = 0;
                bool scored = false;
                for (const auto& t : on_target1) {
                  const auto& w = t.weights[static_cast<size_t>(ref_leaf(t, &v[static_cast<size_t>(r * s.n_features)]))];
                  for (const auto& p : w) {
                    sum += static_cast<double>(p.second);
                    scored = true;
                  }
                }
                ASSERT_EQ(out.f[static_cast<size_t>(2 * r)], 0.0f) << "row " << r;
                ASSERT_EQ(out.f[static_cast<size_t>(2 * r + 1)], scored ? static_cast<float>(sum) : 0.0f) << "row " << r;
              }
            }
          }
        }
        for (const auto& [node, n_out] : kernels) {
          auto k = compile(node);
          for (int64_t rows_n : {1, 9, 16, 31, 128, 200, 256, 300}) {
            const auto v = random_rows(rows_n, s.n_features, s.seed + static_cast<uint32_t>(rows_n));
            const Tensor x = Tensor::floats({rows_n, s.n_features}, v);
            ASSERT_TRUE(flock::tree::set_simd_walk(true));
            const auto simd = run(*k, x, n_out);
            ASSERT_FALSE(flock::tree::set_simd_walk(false));
            const auto portable = run(*k, x, n_out);
            for (size_t o = 0; o < n_out; ++o)
              ASSERT_EQ(bits(simd[o]), bits(portable[o])) << "output " << o << ", " << rows_n << " rows";
            ++compared;
          }
        }
      }
    }
  }
  EXPECT_EQ(compared, 10 * 3 * 4 * 4 * 8);
}

// ------------------------------------------------------------------------------------------------
// Errors

TEST(TreeEnsembleErrors, InvalidStructures) {
  std::string msg;
  {
    Tree t;  // true child 5 does not exist
    t.branch(0, 0, 0, "BRANCH_LEQ", 0, 5, 2).leaf_w(0, 2, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("true child 5"), std::string::npos) << msg;
  }
  {
    Tree t;  // child in another tree
    t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 1).leaf_w(1, 1, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }), ErrorCode::InvalidModel);
  }
  {
    Tree t;  // cycle 0 -> 1 -> 0
    t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 2).branch(0, 1, 0, "BRANCH_LEQ", 0, 0, 2).leaf_w(0, 2, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
  }
  {
    Tree t;  // self loop
    t.branch(0, 0, 0, "BRANCH_LEQ", 0, 0, 1).leaf_w(0, 1, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }), ErrorCode::InvalidModel);
  }
  {
    Tree t;  // duplicate node id
    t.branch(0, 0, 0, "BRANCH_LEQ", 0, 1, 1).leaf_w(0, 1, 1).leaf_w(0, 1, 2);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("twice"), std::string::npos) << msg;
  }
  {
    Tree t;  // weight for a node that does not exist
    t.leaf_w(0, 0, 1).weight(0, 9, 0, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }), ErrorCode::InvalidModel);
  }
  {
    Tree t;  // target id out of range
    t.leaf(0, 0).weight(0, 0, 1, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor(1)); }, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("target_ids"), std::string::npos) << msg;
  }
  {
    Tree t;  // class id out of range
    t.leaf(0, 0).weight(0, 0, 3, 1);
    EXPECT_EQ(code_of([&] { compile(t.classifier({0, 1, 2})); }), ErrorCode::InvalidModel);
  }
  {
    Tree t;  // negative feature
    t.branch(0, 0, -1, "BRANCH_LEQ", 0, 1, 2).leaf_w(0, 1, 1).leaf_w(0, 2, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }), ErrorCode::InvalidModel);
  }
  {
    onnx::NodeProto n = two_trees().regressor();  // attribute lengths differ
    remove_attr(n, "nodes_values");
    set_floats(n, "nodes_values", {0.5f});
    EXPECT_EQ(code_of([&] { compile(n); }, &msg), ErrorCode::InvalidModel);
    EXPECT_NE(msg.find("nodes_values"), std::string::npos) << msg;
  }
  {
    onnx::NodeProto n = two_trees().regressor();  // both forms of an attribute
    set_double_tensor(n, "nodes_values_as_tensor", std::vector<double>(8, 0.0));
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::InvalidModel);
  }
  {
    onnx::NodeProto n = two_trees().regressor();
    remove_attr(n, "n_targets");
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::InvalidModel);
  }
  {
    onnx::NodeProto n = two_trees().regressor(2);
    set_floats(n, "base_values", {1, 2, 3});
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::InvalidModel);
  }
  {
    onnx::NodeProto n = two_trees().node("TreeEnsembleClassifier", "class");  // no labels
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::InvalidModel);
    set_ints(n, "classlabels_int64s", {0, 1});
    set_strings(n, "classlabels_strings", {"a", "b"});  // both kinds
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::InvalidModel);
  }
  {
    Tree t;
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }), ErrorCode::InvalidModel);  // no nodes
  }
}

TEST(TreeEnsembleErrors, UnsupportedValues) {
  std::string msg;
  {
    Tree t;
    t.branch(0, 0, 0, "BRANCH_SOMETIMES", 0, 1, 2).leaf_w(0, 1, 1).leaf_w(0, 2, 1);
    EXPECT_EQ(code_of([&] { compile(t.regressor()); }, &msg), ErrorCode::UnsupportedOperator);
    EXPECT_NE(msg.find("BRANCH_SOMETIMES"), std::string::npos) << msg;
  }
  {
    onnx::NodeProto n = two_trees().regressor();
    set_string(n, "post_transform", "SQUASH");
    EXPECT_EQ(code_of([&] { compile(n); }, &msg), ErrorCode::UnsupportedOperator);
    EXPECT_NE(msg.find("SQUASH"), std::string::npos) << msg;
  }
  {
    onnx::NodeProto n = two_trees().regressor();
    set_string(n, "aggregate_function", "MEDIAN");
    EXPECT_EQ(code_of([&] { compile(n); }), ErrorCode::UnsupportedOperator);
  }
}

TEST(TreeEnsembleErrors, BadInputs) {
  auto k = compile(two_trees().regressor());
  std::string msg;
  EXPECT_EQ(code_of([&] { run(*k, rows({{0}}), 1); }, &msg), ErrorCode::InvalidInput);  // needs 2 features
  EXPECT_NE(msg.find("feature 1"), std::string::npos) << msg;
  EXPECT_EQ(code_of([&] { run(*k, Tensor::strings({1, 2}, {"a", "b"}), 1); }), ErrorCode::TypeMismatch);
  EXPECT_EQ(code_of([&] { run(*k, Tensor::floats({1, 1, 2}, {0, 0}), 1); }), ErrorCode::InvalidInput);
  EXPECT_EQ(code_of([&] {
              std::vector<Tensor> out(1);
              k->run({nullptr}, out);
            }),
            ErrorCode::InvalidInput);
}

// ------------------------------------------------------------------------------------------------
// Ensembles compiled outside the attributes (the XGBoost importer's route into the kernels).

flock::tree::Ensemble small_prebuilt() {
  using flock::tree::Node;
  flock::tree::Ensemble e;
  // x0 < 0.5 (missing: true side) ? 10 : 20
  e.nodes_f = {Node<float>{0.5f, 0, 1, 2, flock::tree::kLt, 1}, Node<float>{10, 0, 1, 1, flock::tree::kLeaf, 0},
               Node<float>{20, 0, 2, 2, flock::tree::kLeaf, 0}};
  e.roots = {0};
  e.leaf_first = {0, 0, 1};
  e.leaf_count = {0, 1, 1};
  e.w_id = {0, 0};
  e.w_value = {10, 20};
  return e;
}

std::unique_ptr<flock::Kernel> prebuilt(flock::tree::Ensemble e) {
  onnx::NodeProto n = Tree().regressor(1);  // the small attributes only
  flock::Attrs attrs(n);
  flock::KernelContext ctx{n, attrs, 3};
  return flock::tree::make_tree_kernel(ctx, std::move(e));
}

TEST(TreeEnsemblePrebuilt, RunsFloatAndDoubleInput) {
  auto k = prebuilt(small_prebuilt());
  EXPECT_EQ(run(*k, rows({{0}, {1}, {kNaN}}), 1)[0].f, (std::vector<float>{10, 20, 10}));
  // Double input: the double thresholds are derived from the float nodes on first use.
  EXPECT_EQ(run(*k, Tensor::doubles({3, 1}, {0, 1, std::nan("")}), 1)[0].f, (std::vector<float>{10, 20, 10}));
}

TEST(TreeEnsemblePrebuilt, StructureIsValidated) {
  auto expect_invalid = [](const std::function<void(flock::tree::Ensemble&)>& edit, const char* what) {
    flock::tree::Ensemble e = small_prebuilt();
    edit(e);
    std::string msg;
    EXPECT_EQ(code_of([&] { prebuilt(std::move(e)); }, &msg), ErrorCode::InvalidModel) << what;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  expect_invalid([](auto& e) { e.nodes_f[0].yes = 0; }, "do not follow it");
  expect_invalid([](auto& e) { e.nodes_f[0].no = 3; }, "do not follow it");
  expect_invalid([](auto& e) { e.nodes_f[1].no = 2; }, "leaf 1 has children");
  expect_invalid([](auto& e) { e.nodes_f[0].mode = 9; }, "not a tree node mode");
  expect_invalid([](auto& e) { e.nodes_f[0].feature = -1; }, "out of range");
  expect_invalid([](auto& e) { e.w_id[1] = 1; }, "target_ids[1]");
  expect_invalid([](auto& e) { e.leaf_count[2] = 2; }, "outside the table");
  expect_invalid([](auto& e) { e.leaf_count[0] = 1; }, "carries weights");
  expect_invalid([](auto& e) { e.roots = {0, 0}; }, "out of order");
  expect_invalid([](auto& e) { e.roots = {0, 2}; }, "within its tree");  // node 0 reaches into tree 1
  expect_invalid([](auto& e) { e.leaf_first.pop_back(); }, "leaf weight tables");
  expect_invalid([](auto& e) { e.nodes_f.clear(); }, "no tree nodes");
}

}  // namespace
