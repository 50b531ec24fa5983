// TreeEnsembleRegressor / TreeEnsembleClassifier kernels, on hand-built NodeProtos. Expected values
// follow ONNX Runtime's semantics (tree_ensemble_aggregator.h / ml_common.h).
#include <gtest/gtest.h>

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

}  // namespace
