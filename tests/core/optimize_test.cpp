// The optimizer's core passes (flock/optimize.hpp): constraints, the columns a model reads,
// tree-ensemble specialization and prediction-predicate inversion.
//
// Specialization is proved differentially: for random constraints and thousands of random inputs
// inside them (NaN where allowed, values exactly at thresholds and at interval ends, one float and
// one double step either side, infinities, signed zeros), the specialized model's outputs equal the
// original's bit for bit, on hand-built ONNX ensembles (every branch mode, missing_value_tracks_true,
// NaN and infinite thresholds, double thresholds, float / double / int64 input, classifiers and
// regressors, every aggregate, behind Imputers and Scalers) and on XGBoost models (and on the
// generated scikit-learn / XGBoost models when FLOCK_MODELS_DIR is set). Regions are checked for
// soundness the same way: every input whose prediction satisfies the comparison lies inside.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"
#include "flock/optimize.hpp"
// The optimizer's internal interfaces: value ranges, the model's graph, the tree kernels.
#include "../../core/src/kernels/ml_preprocess.hpp"
#include "../../core/src/kernels/ml_tree.hpp"
#include "../../core/src/model_internals.hpp"
#include "../../core/src/optimize/value_range.hpp"

#ifndef FLOCK_TEST_DATA_DIR
#error "FLOCK_TEST_DATA_DIR must point at tests/core/data"
#endif

namespace {

using flock::ElemType;
using flock::Model;
using flock::Tensor;
using flock::optimize::Bound;
using flock::optimize::Constraints;
using flock::optimize::FeatureConstraint;
using flock::optimize::Interval;
using flock::optimize::Comparison;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// A. Constraints

TEST(OptimizeConstraints, IntervalBasics) {
  EXPECT_TRUE(Interval::all().contains(kInf));
  EXPECT_TRUE(Interval::all().contains(-kInf));
  EXPECT_FALSE(Interval::all().contains(kNaN));
  EXPECT_TRUE(Interval::greater_than(1).contains(1.5));
  EXPECT_FALSE(Interval::greater_than(1).contains(1));
  EXPECT_TRUE(Interval::at_least(1).contains(1));
  EXPECT_FALSE(Interval::less_than(1).contains(1));
  EXPECT_TRUE(Interval::at_most(1).contains(1));
  EXPECT_TRUE(Interval::point(2).contains(2));
  EXPECT_FALSE(Interval::point(2).contains(std::nextafter(2.0, 3.0)));
  EXPECT_TRUE(Interval::none().is_empty());
  EXPECT_FALSE(Interval::none().contains(0));
  EXPECT_TRUE(Interval::between({1, true}, {1, false}).is_empty());
  EXPECT_TRUE(Interval::between({2, true}, {1, true}).is_empty());
  EXPECT_FALSE(Interval::point(1).is_empty());
  EXPECT_TRUE(Interval::greater_than(kInf).is_empty());
  EXPECT_FALSE(Interval::at_least(kInf).is_empty());
  // A NaN bound says nothing.
  EXPECT_TRUE(Interval::greater_than(kNaN).is_all());
}

TEST(OptimizeConstraints, Intersection) {
  const Interval a = Interval::between({0, true}, {10, false});
  const Interval b = Interval::between({0, false}, {10, true});
  const Interval c = a.intersect(b);
  EXPECT_FALSE(c.contains(0));
  EXPECT_FALSE(c.contains(10));
  EXPECT_TRUE(c.contains(5));
  EXPECT_EQ(c.to_string(), "(0, 10)");
  EXPECT_EQ(Interval::at_least(3).intersect(Interval::at_most(3)), Interval::point(3));
  EXPECT_TRUE(Interval::greater_than(3).intersect(Interval::at_most(3)).is_empty());
  EXPECT_EQ(Interval::all().intersect(Interval::less_than(-1)), Interval::less_than(-1));

  FeatureConstraint x{Interval::at_least(1), true}, y{Interval::at_most(2), false};
  const FeatureConstraint z = x.intersect(y);
  EXPECT_FALSE(z.missing_allowed);
  EXPECT_TRUE(z.contains(1.5));
  EXPECT_FALSE(z.contains(kNaN));
  EXPECT_TRUE(x.contains(kNaN));
  EXPECT_TRUE((FeatureConstraint{Interval::none(), false}).is_empty());
  EXPECT_FALSE((FeatureConstraint{Interval::none(), true}).is_empty());  // only missing values

  Constraints p(2), q(3);
  p.columns[0] = x;
  q.columns[0] = y;
  q.columns[2] = FeatureConstraint{Interval::none(), false};
  const Constraints r = p.intersect(q);
  ASSERT_EQ(r.columns.size(), 3u);
  EXPECT_EQ(r.columns[0].values, Interval::between({1, true}, {2, true}));
  EXPECT_TRUE(r.columns[1].is_any());
  EXPECT_TRUE(r.unsatisfiable());
  EXPECT_FALSE(p.unsatisfiable());
  EXPECT_EQ(r.to_string({"f00", "f01", "f02"}), "f00 >= 1 and f00 <= 2, f02 has no value");
  Constraints s(2);
  s.columns[1] = FeatureConstraint{Interval::greater_than(0.5), true};
  EXPECT_EQ(s.to_string(), "(column 1 > 0.5 or column 1 is missing)");
}

// Bounds as the trees compare them: float steps, rounding, int64 conversion.
TEST(OptimizeConstraints, RangesInTheComparedType) {
  using flock::optimize::detail::range_for;
  const float one = 1.0f, above_one = std::nextafter(1.0f, 2.0f), below_one = std::nextafter(1.0f, 0.0f);
  FeatureConstraint gt{Interval::greater_than(1.0), false};
  // Exact float values: x > 1 is x >= the next float.
  auto r = range_for(gt, ElemType::Float, true);
  EXPECT_EQ(r.lo, above_one);
  EXPECT_EQ(r.hi, kInf);
  EXPECT_FALSE(r.missing);
  // Rounded values: a double just above 1 rounds to 1.0f.
  r = range_for(gt, ElemType::Float, false);
  EXPECT_EQ(r.lo, one);
  // Doubles: the next double.
  r = range_for(gt, ElemType::Double, true);
  EXPECT_EQ(r.lo, std::nextafter(1.0, 2.0));
  FeatureConstraint lt{Interval::less_than(1.0), true};
  r = range_for(lt, ElemType::Float, true);
  EXPECT_EQ(r.hi, below_one);
  EXPECT_TRUE(r.missing);
  // A bound between two floats: x >= 0.1 (double) is x >= the float above 0.1.
  FeatureConstraint ge{Interval::at_least(0.1), false};
  r = range_for(ge, ElemType::Float, true);
  EXPECT_EQ(r.lo, static_cast<double>(0.1f));  // 0.1f is just above 0.1
  r = range_for(FeatureConstraint{Interval::at_most(0.1), false}, ElemType::Float, true);
  EXPECT_EQ(r.hi, static_cast<double>(std::nextafter(0.1f, 0.0f)));
  // Past the float range: rounds to infinity.
  FeatureConstraint huge{Interval::at_least(1e300), false};
  r = range_for(huge, ElemType::Float, false);
  EXPECT_EQ(r.lo, kInf);
  FeatureConstraint empty_open{Interval::between({1.0, false}, {static_cast<double>(above_one), false}), false};
  EXPECT_FALSE(range_for(empty_open, ElemType::Float, true).has_values());
  // int64: integers, then float; a column that may be missing is unconstrained.
  FeatureConstraint ints{Interval::between({1.5, false}, {4.0, false}), false};
  r = range_for(ints, ElemType::Int64, true);
  EXPECT_EQ(r.lo, 2.0);
  EXPECT_EQ(r.hi, 3.0);
  ints.missing_allowed = true;
  r = range_for(ints, ElemType::Int64, true);
  EXPECT_EQ(r.lo, -kInf);
  EXPECT_FALSE(r.missing);
}

// ---------------------------------------------------------------------------------------------
// Model builders

std::vector<uint8_t> bytes_of(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return {s.begin(), s.end()};
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

onnx::AttributeProto* attr(onnx::NodeProto* node, const std::string& name, onnx::AttributeProto::AttributeType t) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(t);
  return a;
}

void value_info(onnx::ValueInfoProto* v, const std::string& name, int elem, std::vector<int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  tt->mutable_shape()->add_dim()->set_dim_param("N");
  for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
}

onnx::ModelProto base_model(int64_t n_features, int elem_type, int64_t ml_opset) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("optimize_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(15);
  op = m.add_opset_import();
  op->set_domain("ai.onnx.ml");
  op->set_version(ml_opset);
  m.mutable_graph()->set_name("g");
  value_info(m.mutable_graph()->add_input(), "input", elem_type, {n_features});
  return m;
}

struct EnsembleSpec {
  int64_t n_features = 4;
  int n_trees = 6;
  int max_depth = 5;
  bool classifier = false;
  int64_t n_outputs = 1;  // targets (regressor) or classes (classifier)
  bool binary_single_class = false;  // classifier: weights for one class only (ORT's binary case)
  int64_t binary_class_id = 1;       // ... that class
  std::string aggregate = "SUM";
  std::string post_transform = "NONE";
  bool mixed_modes = true;      // else one mode (LEQ/LT/GTE/GT) for the ensemble: the perfect-tree walk
  bool double_thresholds = false;  // nodes_values_as_tensor with doubles (ml opset 3)
  int input_type = onnx::TensorProto::FLOAT;
  bool base_values = true;
  int scaler = 0;  // 1: a Scaler with per-column parameters before the trees, 2: with one for all
  int imputer = 0;  // 1: an Imputer of NaN (per column) first, 2: one replacing 0.5 in every column
};

// Split values are drawn from this grid (so inputs and constraint ends hit them exactly), with a
// few random ones, NaN and infinities.
const std::vector<double> kGrid = {-2, -1, -0.5, 0, 0.25, 0.5, 1, 1.5, 2};

onnx::ModelProto random_ensemble(const EnsembleSpec& spec, std::mt19937_64& rng) {
  const int64_t ml_opset = spec.double_thresholds ? 3 : 1;
  onnx::ModelProto m = base_model(spec.n_features, spec.input_type, ml_opset);
  auto* g = m.mutable_graph();
  auto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->set_op_type(spec.classifier ? "TreeEnsembleClassifier" : "TreeEnsembleRegressor");
  node->add_input("input");
  std::uniform_real_distribution<double> unit(0, 1);
  const std::vector<std::string> all_modes = {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"};
  const std::string uniform_mode = all_modes[rng() % 4];

  std::vector<int64_t> treeids, nodeids, featureids, trueids, falseids, missing, w_tree, w_node, w_id;
  std::vector<std::string> modes;
  std::vector<double> values, weights;
  auto threshold = [&]() -> double {
    const double u = unit(rng);
    if (u < 0.03) return kNaN;
    if (u < 0.06) return unit(rng) < 0.5 ? kInf : -kInf;
    if (u < 0.2) {
      const double v = std::round((unit(rng) * 6 - 3) * 100) / 100;  // not float-exact: 0.01 steps
      return spec.double_thresholds ? v : static_cast<double>(static_cast<float>(v));
    }
    double v = kGrid[rng() % kGrid.size()];
    if (spec.double_thresholds && unit(rng) < 0.3) v += 0.1;  // between two floats
    return v;
  };
  for (int t = 0; t < spec.n_trees; ++t) {
    int64_t next_id = 0;
    // Pre-order build with an explicit stack of (id, depth).
    std::vector<std::pair<int64_t, int>> stack = {{next_id++, 0}};
    while (!stack.empty()) {
      // Not a structured binding: add_weight captures id, which clang 14 refuses for bindings.
      const int64_t id = stack.back().first;
      const int depth = stack.back().second;
      stack.pop_back();
      treeids.push_back(t);
      nodeids.push_back(id);
      const bool leaf = depth >= spec.max_depth || (depth > 0 && unit(rng) < 0.2);
      if (leaf) {
        featureids.push_back(0);
        modes.push_back("LEAF");
        trueids.push_back(0);
        falseids.push_back(0);
        missing.push_back(0);
        values.push_back(0);
        auto add_weight = [&](int64_t k) {
          w_tree.push_back(t);
          w_node.push_back(id);
          w_id.push_back(k);
          weights.push_back(std::round((unit(rng) * 4 - 2) * 1000) / 1000 + (spec.double_thresholds ? 1e-9 : 0));
        };
        if (spec.classifier && spec.binary_single_class) add_weight(spec.binary_class_id);
        else if (spec.n_outputs == 1) add_weight(0);
        else
          for (int64_t k = 0; k < spec.n_outputs; ++k)
            if (unit(rng) < 0.7) add_weight(k);
        continue;
      }
      const int64_t yes = next_id++, no = next_id++;
      featureids.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(spec.n_features)));
      modes.push_back(spec.mixed_modes ? all_modes[rng() % all_modes.size()] : uniform_mode);
      trueids.push_back(yes);
      falseids.push_back(no);
      missing.push_back(unit(rng) < 0.5 ? 1 : 0);
      values.push_back(threshold());
      stack.push_back({no, depth + 1});
      stack.push_back({yes, depth + 1});
    }
  }
  auto ints = [&](const std::string& name, const std::vector<int64_t>& v) {
    auto* a = attr(node, name, onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  };
  auto doubles = [&](const std::string& name, const std::vector<double>& v) {
    if (spec.double_thresholds) {
      auto* a = attr(node, name + "_as_tensor", onnx::AttributeProto::TENSOR);
      auto* t = a->mutable_t();
      t->set_data_type(onnx::TensorProto::DOUBLE);
      t->add_dims(static_cast<int64_t>(v.size()));
      for (double x : v) t->add_double_data(x);
    } else {
      auto* a = attr(node, name, onnx::AttributeProto::FLOATS);
      for (double x : v) a->add_floats(static_cast<float>(x));
    }
  };
  ints("nodes_treeids", treeids);
  ints("nodes_nodeids", nodeids);
  ints("nodes_featureids", featureids);
  ints("nodes_truenodeids", trueids);
  ints("nodes_falsenodeids", falseids);
  ints("nodes_missing_value_tracks_true", missing);
  auto* ms = attr(node, "nodes_modes", onnx::AttributeProto::STRINGS);
  for (const auto& s : modes) ms->add_strings(s);
  doubles("nodes_values", values);
  const std::string prefix = spec.classifier ? "class" : "target";
  ints(prefix + "_treeids", w_tree);
  ints(prefix + "_nodeids", w_node);
  ints(prefix + "_ids", w_id);
  doubles(prefix + "_weights", weights);
  attr(node, "post_transform", onnx::AttributeProto::STRING)->set_s(spec.post_transform);
  if (spec.base_values) {
    std::vector<double> base;
    for (int64_t k = 0; k < spec.n_outputs; ++k) base.push_back(0.25 * static_cast<double>(k + 1));
    auto* a = attr(node, "base_values", onnx::AttributeProto::FLOATS);
    for (double x : base) a->add_floats(static_cast<float>(x));
  }
  // Preprocessing before the trees: input -> [Imputer] -> [Scaler] -> trees.
  std::string feed = "input";
  if (spec.imputer) {
    const std::vector<float> imputed = {0, 0.5f, -1, 1.5f, 2};
    auto* imputer = g->add_node();
    imputer->set_domain("ai.onnx.ml");
    imputer->set_op_type("Imputer");
    imputer->add_input(feed);
    imputer->add_output("imputed");
    auto* values = attr(imputer, "imputed_value_floats", onnx::AttributeProto::FLOATS);
    const int64_t n = spec.imputer == 1 ? spec.n_features : 1;
    for (int64_t k = 0; k < n; ++k) values->add_floats(imputed[rng() % imputed.size()]);
    attr(imputer, "replaced_value_float", onnx::AttributeProto::FLOAT)
        ->set_f(spec.imputer == 1 ? std::numeric_limits<float>::quiet_NaN() : 0.5f);
    feed = "imputed";
  }
  if (spec.scaler) {
    // Some scales negative or zero.
    const std::vector<float> scales = {1, 2, -1, 0.5f, -2, 0, 0.1f}, offsets = {0, 0.5f, -1, 0.3f};
    auto* scaler = g->add_node();
    scaler->set_domain("ai.onnx.ml");
    scaler->set_op_type("Scaler");
    scaler->add_input(feed);
    scaler->add_output("scaled");
    auto* sc = attr(scaler, "scale", onnx::AttributeProto::FLOATS);
    auto* off = attr(scaler, "offset", onnx::AttributeProto::FLOATS);
    const int64_t n = spec.scaler == 1 ? spec.n_features : 1;
    for (int64_t k = 0; k < n; ++k) {
      sc->add_floats(scales[rng() % scales.size()]);
      off->add_floats(offsets[rng() % offsets.size()]);
    }
    feed = "scaled";
  }
  if (feed != "input") {
    node->set_input(0, feed);
    for (int k = 0; k + 1 < g->node_size(); ++k) g->mutable_node()->SwapElements(k, k + 1);  // trees last
    node = g->mutable_node(g->node_size() - 1);
  }
  if (spec.classifier) {
    auto* labels = attr(node, "classlabels_int64s", onnx::AttributeProto::INTS);
    for (int64_t k = 0; k < spec.n_outputs; ++k) labels->add_ints(10 + k);
    node->add_output("label");
    node->add_output("probabilities");
    value_info(g->add_output(), "label", onnx::TensorProto::INT64, {});
    value_info(g->add_output(), "probabilities", onnx::TensorProto::FLOAT, {spec.n_outputs});
  } else {
    attr(node, "n_targets", onnx::AttributeProto::INT)->set_i(spec.n_outputs);
    attr(node, "aggregate_function", onnx::AttributeProto::STRING)->set_s(spec.aggregate);
    node->add_output("variable");
    value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {spec.n_outputs});
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// The differential check

// Every threshold of the model's ensembles, per column (to aim inputs and constraint ends at them).
std::vector<std::vector<double>> thresholds_by_column(const Model& model, int64_t width) {
  std::vector<std::vector<double>> out(static_cast<size_t>(width));
  const flock::preprocess::ScalerKernel* scaler = nullptr;
  for (const auto& step : flock::ModelInternals::graph(model).steps)
    if (const auto* s = dynamic_cast<const flock::preprocess::ScalerKernel*>(step.kernel)) scaler = s;
  for (const auto& step : flock::ModelInternals::graph(model).steps) {
    const auto* t = dynamic_cast<const flock::tree::TreeKernel*>(step.kernel);
    if (!t) continue;
    const auto& e = t->ensemble();
    for (size_t i = 0; i < e.nodes_f.size(); ++i) {
      const auto& n = e.nodes_f[i];
      if (n.mode == flock::tree::kLeaf || n.feature < 0 || n.feature >= width) continue;
      auto& list = out[static_cast<size_t>(n.feature)];
      list.push_back(e.nodes_d.empty() ? static_cast<double>(n.threshold) : e.nodes_d[i].threshold);
      if (!e.nodes_d.empty()) list.push_back(static_cast<double>(n.threshold));
      if (scaler) {
        // The input values the Scaler maps to the threshold (about: the pools add float steps).
        const size_t p = scaler->scales().size() == 1 ? 0 : static_cast<size_t>(n.feature);
        if (p < scaler->scales().size() && scaler->scales()[p] != 0)
          list.push_back(static_cast<double>(n.threshold) / scaler->scales()[p] + scaler->offsets()[p]);
      }
    }
  }
  for (auto& list : out) {
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    if (list.size() > 64) list.resize(64);  // a sample is enough for big models
  }
  return out;
}

// Values worth trying for a column: its thresholds, a float and a double step either side, the
// grid, signed zeros and infinities.
std::vector<double> interesting_values(const std::vector<double>& thresholds) {
  std::vector<double> v = {0.0, -0.0, kInf, -kInf, FLT_MAX, -FLT_MAX, 1e300, -1e300};
  v.insert(v.end(), kGrid.begin(), kGrid.end());
  for (double t : thresholds) {
    if (std::isnan(t)) continue;
    v.push_back(t);
    const float f = static_cast<float>(t);
    v.push_back(std::nextafter(f, std::numeric_limits<float>::infinity()));
    v.push_back(std::nextafter(f, -std::numeric_limits<float>::infinity()));
    v.push_back(std::nextafter(t, kInf));
    v.push_back(std::nextafter(t, -kInf));
  }
  return v;
}

FeatureConstraint random_constraint(const std::vector<double>& pool, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  FeatureConstraint c;
  c.missing_allowed = unit(rng) < 0.5;
  auto pick = [&] { return unit(rng) < 0.8 ? pool[rng() % pool.size()] : unit(rng) * 6 - 3; };
  const double u = unit(rng);
  if (u < 0.15) {
    c.values = Interval::point(pick());
  } else if (u < 0.25) {
    // Only the missing flag.
  } else {
    std::optional<Bound> lo, hi;
    if (unit(rng) < 0.7) lo = Bound{pick(), unit(rng) < 0.5};
    if (unit(rng) < 0.7) hi = Bound{pick(), unit(rng) < 0.5};
    if (lo && hi && lo->value > hi->value) std::swap(lo, hi);
    Interval i;
    if (lo) i = i.intersect(lo->closed ? Interval::at_least(lo->value) : Interval::greater_than(lo->value));
    if (hi) i = i.intersect(hi->closed ? Interval::at_most(hi->value) : Interval::less_than(hi->value));
    c.values = i;
  }
  return c;
}

// A value satisfying `c`: with exact values, a value of the input type; otherwise any double
// satisfying `c` (make_batch rounds it to the input type, as a binding does).
std::optional<double> random_value(const FeatureConstraint& c, const std::vector<double>& pool, bool exact,
                                   ElemType type, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  const bool integers = type == ElemType::Int64;  // never NaN; whole numbers
  if (c.missing_allowed && !integers && unit(rng) < 0.1) return kNaN;
  auto to_input = [&](double v) {
    if (integers) return std::round(v);
    return type == ElemType::Double ? v : static_cast<double>(static_cast<float>(v));
  };
  auto acceptable = [&](double v) {
    if (integers && (!std::isfinite(v) || std::fabs(v) > 1e15 || std::round(v) != v)) return false;
    if (std::isnan(v)) return c.missing_allowed;
    if (exact && to_input(v) != v) return false;  // not a value of the input type
    return c.values.contains(v);
  };
  std::vector<double> ends;
  for (const auto& b : {c.values.lower(), c.values.upper()}) {
    if (!b) continue;
    ends.push_back(b->value);
    const float f = static_cast<float>(b->value);
    ends.push_back(std::nextafter(f, std::numeric_limits<float>::infinity()));
    ends.push_back(std::nextafter(f, -std::numeric_limits<float>::infinity()));
    ends.push_back(std::nextafter(b->value, kInf));
    ends.push_back(std::nextafter(b->value, -kInf));
  }
  for (int attempt = 0; attempt < 64; ++attempt) {
    double v;
    const double u = unit(rng);
    if (u < 0.3 && !ends.empty()) v = ends[rng() % ends.size()];
    else if (u < 0.8) v = pool[rng() % pool.size()];
    else if (integers && u < 0.9) v = std::round(pool[rng() % pool.size()]) + static_cast<double>(rng() % 3) - 1;
    else {
      // Uniform inside finite ends (or around them).
      const double lo = c.values.lower() && std::isfinite(c.values.lower()->value) ? c.values.lower()->value : -3;
      const double hi = c.values.upper() && std::isfinite(c.values.upper()->value) ? c.values.upper()->value : 3;
      v = lo + (hi - lo) * unit(rng);
    }
    // The value the caller holds; make_batch rounds it to the input type as a binding does.
    if (acceptable(v)) return v;
  }
  if (c.missing_allowed && !integers) return kNaN;
  return std::nullopt;
}

flock::FeatureBatch make_batch(const std::vector<std::vector<double>>& rows, ElemType type, int64_t width) {
  flock::FeatureBatch b;
  b.rows = static_cast<int64_t>(rows.size());
  Tensor t(type, {b.rows, width});
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t k = 0; k < width; ++k) {
      const double v = rows[r][static_cast<size_t>(k)];
      const size_t at = r * static_cast<size_t>(width) + static_cast<size_t>(k);
      if (type == ElemType::Float) t.f[at] = static_cast<float>(v);
      else if (type == ElemType::Double) t.d[at] = v;
      // An int64 input has no missing value: NaN (drawn for a column nothing constrains) becomes 0,
      // not a cast past int64's range (undefined; UBSan stops on it).
      else t.i[at] = std::isfinite(v) && std::abs(v) < 9.0e18 ? static_cast<int64_t>(v) : 0;
    }
  b.inputs.push_back(std::move(t));
  return b;
}

// Outputs identical to the bit (floats compared as bytes: a NaN equals the same NaN, -0 is not 0).
::testing::AssertionResult same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "output counts differ";
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].type != b[k].type || a[k].shape != b[k].shape)
      return ::testing::AssertionFailure() << "output " << k << " type or shape differs";
    if (a[k].f.size() != b[k].f.size() || a[k].d.size() != b[k].d.size() || a[k].i != b[k].i || a[k].s != b[k].s)
      return ::testing::AssertionFailure() << "output " << k << " differs (labels or sizes)";
    for (size_t j = 0; j < a[k].f.size(); ++j)
      if (std::memcmp(&a[k].f[j], &b[k].f[j], sizeof(float)) != 0)
        return ::testing::AssertionFailure() << "output " << k << " value " << j << ": " << a[k].f[j] << " vs "
                                             << b[k].f[j];
    if (!a[k].d.empty() && std::memcmp(a[k].d.data(), b[k].d.data(), a[k].d.size() * sizeof(double)) != 0)
      return ::testing::AssertionFailure() << "output " << k << " double values differ";
  }
  return ::testing::AssertionSuccess();
}

struct DifferentialTotals {
  int64_t rounds = 0;
  int64_t specialized = 0;
  int64_t points = 0;
  int64_t nodes_before = 0;
  int64_t nodes_after = 0;
  int64_t collapsed = 0;
};

// `rounds` random constraint sets, each with up to `points` inputs inside, exact and rounded.
DifferentialTotals check_specialization(const Model& model, int rounds, int points, uint64_t seed) {
  DifferentialTotals totals;
  const auto& spec = model.signature().inputs.at(0);
  const int64_t width = spec.width;
  const ElemType type = spec.type;
  const auto thresholds = thresholds_by_column(model, width);
  std::vector<std::vector<double>> pools;
  for (const auto& t : thresholds) pools.push_back(interesting_values(t));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < rounds; ++round) {
    Constraints constraints(static_cast<size_t>(width));
    constraints.exact_input_values = round % 2 == 0;
    const double density = (round % 3 + 1) / 3.0;  // a third, two thirds or all of the columns
    for (int64_t k = 0; k < width; ++k)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < density)
        constraints.columns[static_cast<size_t>(k)] = random_constraint(pools[static_cast<size_t>(k)], rng);
    ++totals.rounds;
    const auto specialized = flock::optimize::specialize(model, constraints);
    if (constraints.unsatisfiable()) {
      EXPECT_FALSE(specialized.has_value());
      continue;
    }
    if (!specialized) {
      ADD_FAILURE() << "no specialization for " << constraints.to_string();
      continue;
    }
    ++totals.specialized;
    totals.nodes_before += specialized->stats.nodes_before;
    totals.nodes_after += specialized->stats.nodes_after;
    totals.collapsed += specialized->stats.trees_collapsed;
    EXPECT_LE(specialized->stats.nodes_after, specialized->stats.nodes_before);
    std::vector<std::vector<double>> rows;
    for (int p = 0; p < points; ++p) {
      std::vector<double> row(static_cast<size_t>(width));
      bool ok = true;
      for (int64_t k = 0; k < width && ok; ++k) {
        const auto v = random_value(constraints.columns[static_cast<size_t>(k)], pools[static_cast<size_t>(k)],
                                    constraints.exact_input_values, type, rng);
        if (!v) ok = false;
        else row[static_cast<size_t>(k)] = *v;
      }
      if (ok) rows.push_back(std::move(row));
    }
    if (rows.empty()) continue;
    totals.points += static_cast<int64_t>(rows.size());
    // The whole batch (block walks) and a few rows alone (the small-batch walks).
    const auto batch = make_batch(rows, type, width);
    const auto before = model.run(batch), after = specialized->model->run(batch);
    EXPECT_TRUE(same_bits(before, after)) << "constraints: " << constraints.to_string()
                                          << (constraints.exact_input_values ? " (exact)" : " (rounded)") << ", "
                                          << specialized->stats.summary();
    for (size_t r = 0; r < std::min<size_t>(rows.size(), 3); ++r) {
      const auto one = make_batch({rows[r]}, type, width);
      EXPECT_TRUE(same_bits(model.run(one), specialized->model->run(one)));
    }
    // The specialized model reads no column it says it does not: any value there gives the same.
    const auto read = flock::optimize::inputs_read(*specialized->model);
    if (!read.all) {
      auto scrambled = rows;
      for (auto& row : scrambled)
        for (int64_t k = 0; k < width; ++k)
          if (!read.read[static_cast<size_t>(k)]) row[static_cast<size_t>(k)] = (rng() % 2) ? kNaN : 12345.0;
      EXPECT_TRUE(same_bits(after, specialized->model->run(make_batch(scrambled, type, width))));
    }
    if (::testing::Test::HasFailure()) break;  // one failure tells enough
  }
  return totals;
}

// ---------------------------------------------------------------------------------------------
// C + D. Specialization of ONNX ensembles

struct Case {
  const char* name;
  EnsembleSpec spec;
};

std::vector<Case> onnx_cases() {
  std::vector<Case> cases;
  EnsembleSpec s;
  cases.push_back({"regressor_mixed_modes", s});
  s.mixed_modes = false;
  cases.push_back({"regressor_uniform_mode_perfect_walk", s});
  s = {};
  s.aggregate = "AVERAGE";
  cases.push_back({"regressor_average", s});
  s.aggregate = "MIN";
  cases.push_back({"regressor_min", s});
  s.aggregate = "MAX";
  s.mixed_modes = false;
  cases.push_back({"regressor_max_uniform", s});
  s = {};
  s.n_outputs = 3;
  cases.push_back({"regressor_three_targets", s});
  s.mixed_modes = false;
  s.post_transform = "SOFTMAX";
  cases.push_back({"regressor_three_targets_softmax_uniform", s});
  s = {};
  s.double_thresholds = true;
  s.input_type = onnx::TensorProto::DOUBLE;
  cases.push_back({"regressor_double_input_double_thresholds", s});
  s.input_type = onnx::TensorProto::FLOAT;
  cases.push_back({"regressor_float_input_double_thresholds", s});
  s = {};
  s.input_type = onnx::TensorProto::DOUBLE;
  cases.push_back({"regressor_double_input_float_thresholds", s});
  s = {};
  s.input_type = onnx::TensorProto::INT64;
  cases.push_back({"regressor_int64_input", s});
  s.mixed_modes = false;
  cases.push_back({"regressor_int64_input_uniform", s});
  s = {};
  s.classifier = true;
  s.n_outputs = 2;
  s.binary_single_class = true;
  s.post_transform = "LOGISTIC";
  cases.push_back({"classifier_binary_single_class", s});
  s.mixed_modes = false;
  cases.push_back({"classifier_binary_single_class_uniform", s});
  s = {};
  s.classifier = true;
  s.n_outputs = 2;
  cases.push_back({"classifier_binary_both_classes", s});
  s = {};
  s.classifier = true;
  s.n_outputs = 4;
  s.post_transform = "SOFTMAX";
  cases.push_back({"classifier_four_classes_softmax", s});
  s.mixed_modes = false;
  s.base_values = false;
  s.n_trees = 30;
  s.max_depth = 7;
  s.n_features = 8;
  cases.push_back({"classifier_four_classes_deep_uniform", s});
  s = {};
  s.n_trees = 40;
  s.max_depth = 8;
  s.n_features = 10;
  s.mixed_modes = false;
  cases.push_back({"regressor_forty_deep_trees", s});
  s = {};
  s.scaler = 1;
  cases.push_back({"scaler_regressor", s});
  s.mixed_modes = false;
  s.scaler = 2;
  cases.push_back({"scaler_one_for_all_uniform", s});
  s = {};
  s.scaler = 1;
  s.input_type = onnx::TensorProto::DOUBLE;
  s.classifier = true;
  s.n_outputs = 3;
  cases.push_back({"scaler_double_input_classifier", s});
  s.input_type = onnx::TensorProto::INT64;
  cases.push_back({"scaler_int64_input_classifier", s});
  s = {};
  s.imputer = 1;
  cases.push_back({"imputer_regressor", s});
  s.input_type = onnx::TensorProto::DOUBLE;
  s.scaler = 2;
  cases.push_back({"imputer_scaler_double_input", s});
  s = {};
  s.imputer = 2;
  s.scaler = 1;
  s.classifier = true;
  s.n_outputs = 2;
  s.mixed_modes = false;
  cases.push_back({"imputer_of_a_value_scaler_classifier", s});
  return cases;
}

TEST(OptimizeSpecialize, RandomOnnxEnsemblesBitForBit) {
  int64_t total_points = 0, total_before = 0, total_after = 0, total_collapsed = 0;
  uint64_t seed = 1;
  for (const Case& c : onnx_cases()) {
    for (int model_index = 0; model_index < 3; ++model_index) {
      SCOPED_TRACE(std::string(c.name) + " model " + std::to_string(model_index));
      std::mt19937_64 rng(seed++);
      const auto bytes = bytes_of(random_ensemble(c.spec, rng));
      const auto model = Model::load(bytes);
      const auto totals = check_specialization(*model, 24, 150, seed * 7919);
      EXPECT_GT(totals.specialized, 0);
      EXPECT_GT(totals.points, 1000);
      EXPECT_LT(totals.nodes_after, totals.nodes_before);
      total_points += totals.points;
      total_before += totals.nodes_before;
      total_after += totals.nodes_after;
      total_collapsed += totals.collapsed;
      if (HasFailure()) return;
    }
  }
  // The check is not vacuous: many points, and the constraints removed a good share of the nodes.
  EXPECT_GT(total_points, 50000);
  EXPECT_LT(total_after, total_before * 9 / 10);
  EXPECT_GT(total_collapsed, 0);
  std::printf("[ specialize ] ONNX ensembles: %lld points, nodes %lld -> %lld, %lld trees collapsed\n",
              static_cast<long long>(total_points), static_cast<long long>(total_before),
              static_cast<long long>(total_after), static_cast<long long>(total_collapsed));
}

TEST(OptimizeSpecialize, XGBoostModelsBitForBit) {
  const std::vector<std::string> fixtures = {"binary_logistic", "binary_positive_leaves", "multi_softmax",
                                             "multi_softprob",  "multi_softprob_2class", "reg_logistic",
                                             "reg_squarederror"};
  uint64_t seed = 1000;
  int64_t points = 0;
  for (const auto& name : fixtures) {
    SCOPED_TRACE(name);
    const std::string text = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name + ".model.json");
    const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    const auto totals = check_specialization(*model, 40, 150, seed++);
    EXPECT_GT(totals.specialized, 0);
    points += totals.points;
    if (HasFailure()) return;
  }
  EXPECT_GT(points, 20000);
}

// The generated test models (scikit-learn and XGBoost, `make models`), when FLOCK_MODELS_DIR
// points at them.
TEST(OptimizeSpecialize, GeneratedModelsBitForBit) {
  const char* dir = std::getenv("FLOCK_MODELS_DIR");
  if (!dir || !std::filesystem::is_directory(dir)) GTEST_SKIP() << "FLOCK_MODELS_DIR is not set";
  uint64_t seed = 5000;
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    const bool tree_model = file.find("_rf.onnx") != std::string::npos || file.find("_gb.onnx") != std::string::npos ||
                            file.find("_tree.onnx") != std::string::npos || file.find("_xgb.json") != std::string::npos;
    if (!tree_model) continue;
    SCOPED_TRACE(file);
    const std::string text = read_text(entry.path().string());
    const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    const auto& inputs = model->signature().inputs;
    // Pipelines whose trees read a preprocessed input are not specialized (nothing to check).
    if (inputs.size() != 1 || inputs[0].width <= 0 ||
        !flock::optimize::specialize(*model, Constraints(static_cast<size_t>(inputs[0].width))))
      continue;
    const auto totals = check_specialization(*model, 16, 120, seed++);
    if (totals.specialized > 0) ++checked;
    if (HasFailure()) return;
    std::printf("[ specialize ] %s: %lld points, nodes %lld -> %lld\n", file.c_str(),
                static_cast<long long>(totals.points), static_cast<long long>(totals.nodes_before),
                static_cast<long long>(totals.nodes_after));
  }
  EXPECT_GT(checked, 0);
}

// A one-target TreeEnsembleRegressor over `n_features` float inputs, written out attribute by
// attribute (every target id 0).
struct HandTrees {
  std::vector<int64_t> treeids, nodeids, featureids, trueids, falseids, missing_true;
  std::vector<std::string> modes;
  std::vector<float> values;
  std::vector<int64_t> target_treeids, target_nodeids;
  std::vector<float> target_weights;
};

onnx::ModelProto hand_tree_regressor(int64_t n_features, const HandTrees& t) {
  onnx::ModelProto m = base_model(n_features, onnx::TensorProto::FLOAT, 1);
  auto* g = m.mutable_graph();
  auto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->set_op_type("TreeEnsembleRegressor");
  node->add_input("input");
  node->add_output("variable");
  auto ints = [&](const char* name, const std::vector<int64_t>& v) {
    auto* a = attr(node, name, onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  };
  auto floats = [&](const char* name, const std::vector<float>& v) {
    auto* a = attr(node, name, onnx::AttributeProto::FLOATS);
    for (auto x : v) a->add_floats(x);
  };
  ints("nodes_treeids", t.treeids);
  ints("nodes_nodeids", t.nodeids);
  ints("nodes_featureids", t.featureids);
  ints("nodes_truenodeids", t.trueids);
  ints("nodes_falsenodeids", t.falseids);
  ints("nodes_missing_value_tracks_true", t.missing_true);
  auto* modes = attr(node, "nodes_modes", onnx::AttributeProto::STRINGS);
  for (const auto& mode : t.modes) modes->add_strings(mode);
  floats("nodes_values", t.values);
  ints("target_treeids", t.target_treeids);
  ints("target_nodeids", t.target_nodeids);
  ints("target_ids", std::vector<int64_t>(t.target_treeids.size(), 0));
  floats("target_weights", t.target_weights);
  attr(node, "n_targets", onnx::AttributeProto::INT)->set_i(1);
  value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {1});
  return m;
}

// A hand-made tree whose every decision is known.
//   node 0: x0 < 1 (missing -> true)   yes: node 1   no: node 2
//   node 1: x1 <= 0 (missing -> false) yes: leaf 10  no: leaf 20
//   node 2: x0 < 3                      yes: leaf 30  no: leaf 40
onnx::ModelProto known_tree() {
  return hand_tree_regressor(2, {.treeids = {0, 0, 0, 0, 0, 0, 0},
                                 .nodeids = {0, 1, 2, 3, 4, 5, 6},
                                 .featureids = {0, 1, 0, 0, 0, 0, 0},
                                 .trueids = {1, 3, 5, 0, 0, 0, 0},
                                 .falseids = {2, 4, 6, 0, 0, 0, 0},
                                 .missing_true = {1, 0, 0, 0, 0, 0, 0},
                                 .modes = {"BRANCH_LT", "BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF", "LEAF"},
                                 .values = {1, 0, 3, 0, 0, 0, 0},
                                 .target_treeids = {0, 0, 0, 0},
                                 .target_nodeids = {3, 4, 5, 6},
                                 .target_weights = {10, 20, 30, 40}});
}

TEST(OptimizeSpecialize, MissingValuesKeepOrDropTheirBranch) {
  const auto model = Model::load(bytes_of(known_tree()));
  // x0 >= 1, may be missing: NaN goes to the true side of node 0, so node 0 stays.
  Constraints c(2);
  c.exact_input_values = true;
  c.columns[0] = FeatureConstraint{Interval::at_least(1), true};
  auto s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_before, 7);
  EXPECT_EQ(s->stats.nodes_after, 7);
  // Not missing: node 0 goes false, node 2 stays (x0 in [1, inf]).
  c.columns[0].missing_allowed = false;
  s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 3);
  EXPECT_EQ(s->stats.branches_removed, 1);
  EXPECT_EQ(s->stats.summary(), "Pruned: 4 of 7 nodes");
  // x0 in [1, 3): leaf 30 only; x1 is then not read either.
  c.columns[0].values = Interval::between({1, true}, {3, false});
  s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 1);
  EXPECT_EQ(s->stats.trees_collapsed, 1);
  EXPECT_EQ(s->stats.summary(), "Pruned: 6 of 7 nodes, 1 of 1 trees to a leaf");
  const auto read = flock::optimize::inputs_read(*s->model);
  ASSERT_FALSE(read.all);
  EXPECT_EQ(read.count(), 0);
  EXPECT_EQ(read.summary(), "Inputs Read: 0 of 2");
  const auto out = s->model->predict(make_batch({{1.0, kNaN}, {2.5, 7.0}}, ElemType::Float, 2));
  EXPECT_EQ(out.values, (std::vector<double>{30, 30}));
  // x0 missing only: the true side; x1 <= 0 sends NaN false: with x1 not missing and > 0, leaf 20.
  c.columns[0] = FeatureConstraint{Interval::none(), true};
  c.columns[1] = FeatureConstraint{Interval::greater_than(0), false};
  s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 1);
  EXPECT_EQ(s->model->predict(make_batch({{kNaN, 0.5}}, ElemType::Float, 2)).values, (std::vector<double>{20}));
  // Rounded values: x0 > 0.99999999 (a double) may reach the model as 1.0f, x0 < 1 undecided.
  c = Constraints(2);
  c.columns[0] = FeatureConstraint{Interval::greater_than(0.99999999), false};
  s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 3);  // 1.0f or more: node 0 goes false
  c.columns[0] = FeatureConstraint{Interval::greater_than(0.9999999), false};  // rounds to below 1.0f
  s = flock::optimize::specialize(*model, c);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 7);
}

TEST(OptimizeSpecialize, WhatItDoesNotUnderstand) {
  const auto model = Model::load(bytes_of(known_tree()));
  // Wrong width, unsatisfiable constraints.
  EXPECT_FALSE(flock::optimize::specialize(*model, Constraints(3)));
  Constraints none(2);
  none.columns[1] = FeatureConstraint{Interval::none(), false};
  EXPECT_FALSE(flock::optimize::specialize(*model, none));
  // No constraint: the same model, nothing pruned.
  const auto same = flock::optimize::specialize(*model, Constraints(2));
  ASSERT_TRUE(same);
  EXPECT_EQ(same->stats.nodes_after, same->stats.nodes_before);
  // A graph without trees.
  onnx::ModelProto m = base_model(2, onnx::TensorProto::FLOAT, 1);
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("Abs");
  node->add_input("input");
  node->add_output("y");
  value_info(m.mutable_graph()->add_output(), "y", onnx::TensorProto::FLOAT, {2});
  const auto abs_model = Model::load(bytes_of(m));
  EXPECT_FALSE(flock::optimize::specialize(*abs_model, Constraints(2)));
  const auto read = flock::optimize::inputs_read(*abs_model);
  EXPECT_TRUE(read.all);
  EXPECT_EQ(read.count(), 2);
}

// A tree whose 40 branches each send both ways to the next: 2^40 paths through 41 nodes. The
// passes walk paths, so they must stop at their budget instead of running forever.
TEST(OptimizeSpecialize, SharedSubtreesStopAtTheBudget) {
  constexpr int kLevels = 40;
  onnx::ModelProto m = base_model(kLevels, onnx::TensorProto::FLOAT, 1);
  auto* g = m.mutable_graph();
  auto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->set_op_type("TreeEnsembleRegressor");
  node->add_input("input");
  node->add_output("variable");
  auto* treeids = attr(node, "nodes_treeids", onnx::AttributeProto::INTS);
  auto* nodeids = attr(node, "nodes_nodeids", onnx::AttributeProto::INTS);
  auto* featureids = attr(node, "nodes_featureids", onnx::AttributeProto::INTS);
  auto* trueids = attr(node, "nodes_truenodeids", onnx::AttributeProto::INTS);
  auto* falseids = attr(node, "nodes_falsenodeids", onnx::AttributeProto::INTS);
  auto* modes = attr(node, "nodes_modes", onnx::AttributeProto::STRINGS);
  auto* values = attr(node, "nodes_values", onnx::AttributeProto::FLOATS);
  for (int i = 0; i <= kLevels; ++i) {
    treeids->add_ints(0);
    nodeids->add_ints(i);
    featureids->add_ints(i % kLevels);  // a column per level: no branch decides another
    trueids->add_ints(i < kLevels ? i + 1 : 0);
    falseids->add_ints(i < kLevels ? i + 1 : 0);
    modes->add_strings(i < kLevels ? "BRANCH_LEQ" : "LEAF");
    values->add_floats(static_cast<float>(i));
  }
  attr(node, "target_treeids", onnx::AttributeProto::INTS)->add_ints(0);
  attr(node, "target_nodeids", onnx::AttributeProto::INTS)->add_ints(kLevels);
  attr(node, "target_ids", onnx::AttributeProto::INTS)->add_ints(0);
  attr(node, "target_weights", onnx::AttributeProto::FLOATS)->add_floats(1.5f);
  attr(node, "n_targets", onnx::AttributeProto::INT)->set_i(1);
  value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {1});
  const auto model = Model::load(bytes_of(m));
  EXPECT_FALSE(flock::optimize::specialize(*model, Constraints(kLevels)));
  EXPECT_FALSE(flock::optimize::prediction_region(*model, Comparison::Greater, 1));
  const auto read = flock::optimize::inputs_read(*model);
  ASSERT_FALSE(read.all);
  EXPECT_EQ(read.count(), kLevels);
  // Constraints that decide every branch: the walk follows one path, within the budget.
  Constraints fixed(kLevels);
  for (auto& column : fixed.columns) column = FeatureConstraint{Interval::point(100), false};
  const auto s = flock::optimize::specialize(*model, fixed);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->stats.nodes_after, 1);
  EXPECT_EQ(s->model->predict(make_batch({std::vector<double>(kLevels, 100)}, ElemType::Float, kLevels)).values,
            (std::vector<double>{1.5}));
}

// ---------------------------------------------------------------------------------------------
// B. Inputs read

TEST(OptimizeInputsRead, TreesReadTheirSplitColumns) {
  std::mt19937_64 rng(77);
  EnsembleSpec spec;
  spec.n_features = 12;
  spec.n_trees = 3;
  spec.max_depth = 2;
  const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
  const auto read = flock::optimize::inputs_read(*model);
  ASSERT_FALSE(read.all);
  EXPECT_EQ(read.width, 12);
  const auto thresholds = thresholds_by_column(*model, 12);
  for (size_t k = 0; k < 12; ++k) EXPECT_EQ(read.read[k], !thresholds[k].empty()) << "column " << k;
  EXPECT_LT(read.count(), 12);
  // Differential: columns not read can hold anything.
  std::uniform_real_distribution<double> unit(-3, 3);
  std::vector<std::vector<double>> rows(200, std::vector<double>(12)), other;
  for (auto& row : rows)
    for (auto& v : row) v = unit(rng) < -2.5 ? kNaN : std::round(unit(rng) * 4) / 4;
  other = rows;
  for (auto& row : other)
    for (size_t k = 0; k < 12; ++k)
      if (!read.read[k]) row[k] = unit(rng) < 0 ? kNaN : -kInf;
  EXPECT_TRUE(same_bits(model->run(make_batch(rows, ElemType::Float, 12)),
                        model->run(make_batch(other, ElemType::Float, 12))));
}

TEST(OptimizeInputsRead, ThroughAnImputerAndAScaler) {
  std::mt19937_64 rng(78);
  EnsembleSpec spec;
  spec.n_features = 12;
  spec.n_trees = 3;
  spec.max_depth = 2;
  spec.scaler = 1;
  spec.imputer = 1;
  const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
  const auto read = flock::optimize::inputs_read(*model);
  ASSERT_FALSE(read.all);
  std::vector<bool> split(12, false);
  for (const auto& step : flock::ModelInternals::graph(*model).steps)
    if (const auto* t = dynamic_cast<const flock::tree::TreeKernel*>(step.kernel))
      for (const auto& n : t->ensemble().nodes_f)
        if (n.mode != flock::tree::kLeaf) split[static_cast<size_t>(n.feature)] = true;
  EXPECT_EQ(read.read, split);
  EXPECT_LT(read.count(), 12);
}

onnx::ModelProto sparse_linear() {
  // y = 2*x0 + 0*x1 - 1*x3 + 0.5 (x2 has a zero coefficient too)
  onnx::ModelProto m = base_model(4, onnx::TensorProto::FLOAT, 1);
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("LinearRegressor");
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  node->add_output("variable");
  auto* c = attr(node, "coefficients", onnx::AttributeProto::FLOATS);
  for (float v : {2.0f, 0.0f, -0.0f, -1.0f}) c->add_floats(v);
  attr(node, "intercepts", onnx::AttributeProto::FLOATS)->add_floats(0.5f);
  value_info(m.mutable_graph()->add_output(), "variable", onnx::TensorProto::FLOAT, {1});
  return m;
}

TEST(OptimizeInputsRead, LinearModelsSkipZeroCoefficientsOnlyForFiniteValues) {
  const auto model = Model::load(bytes_of(sparse_linear()));
  // Without constraints a zero coefficient still turns NaN into NaN: every column is read.
  auto read = flock::optimize::inputs_read(*model);
  ASSERT_FALSE(read.all);
  EXPECT_EQ(read.count(), 4);
  Constraints c(4);
  c.columns[1] = FeatureConstraint{Interval::between({-10, true}, {10, true}), false};
  c.columns[2] = FeatureConstraint{Interval::between({-10, true}, {10, true}), true};  // may be missing
  read = flock::optimize::inputs_read(*model, c);
  ASSERT_FALSE(read.all);
  EXPECT_EQ(read.read, (std::vector<bool>{true, false, true, true}));
  EXPECT_EQ(read.summary(), "Inputs Read: 3 of 4");
  // Feeding 0 instead gives the same prediction (up to the sign of a zero score).
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> unit(-10, 10);
  for (int k = 0; k < 200; ++k) {
    const std::vector<double> row = {unit(rng), unit(rng), unit(rng), unit(rng)};
    std::vector<double> zeroed = row;
    zeroed[1] = 0;
    const double a = model->predict(make_batch({row}, ElemType::Float, 4)).values.at(0);
    const double b = model->predict(make_batch({zeroed}, ElemType::Float, 4)).values.at(0);
    EXPECT_EQ(a, b);
  }
  // A column bounded beyond the float range is not finite once cast to float.
  c.columns[1].values = Interval::between({-1e300, true}, {10, true});
  EXPECT_TRUE(flock::optimize::inputs_read(*model, c).read[1]);
}


// ---------------------------------------------------------------------------------------------
// E. Prediction-predicate inversion

bool compare(Comparison op, double prediction, double c) {
  switch (op) {
    case Comparison::Greater: return prediction > c;
    case Comparison::GreaterOrEqual: return prediction >= c;
    case Comparison::Less: return prediction < c;
    case Comparison::LessOrEqual: return prediction <= c;
  }
  return true;
}

struct RegionTotals {
  int64_t rounds = 0;
  int64_t qualifying = 0;     // points whose prediction satisfies the comparison
  int64_t filtered = 0;       // points the region excludes (so they must not qualify)
  int64_t narrowed_columns = 0;
  int64_t none = 0;
};

// Soundness: every input (inside the constraints) whose prediction satisfies the comparison lies
// in every column's region.
// `label_class` >= 0: the region of rows labelled class_labels[label_class] (label_region).
RegionTotals check_region(const Model& model, int rounds, int points, uint64_t seed, int64_t label_class = -1) {
  RegionTotals totals;
  const auto& spec = model.signature().inputs.at(0);
  const int64_t width = spec.width;
  const ElemType type = spec.type;
  const auto thresholds = thresholds_by_column(model, width);
  std::vector<std::vector<double>> pools;
  for (const auto& t : thresholds) pools.push_back(interesting_values(t));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  const Comparison ops[] = {Comparison::Greater, Comparison::GreaterOrEqual, Comparison::Less,
                            Comparison::LessOrEqual};
  for (int round = 0; round < rounds; ++round) {
    Constraints constraints(static_cast<size_t>(width));
    constraints.exact_input_values = round % 2 == 0;
    if (round % 3 != 0)
      for (int64_t k = 0; k < width; ++k)
        if (unit(rng) < 0.3) constraints.columns[static_cast<size_t>(k)] = random_constraint(pools[static_cast<size_t>(k)], rng);
    if (constraints.unsatisfiable()) continue;
    std::vector<std::vector<double>> rows;
    for (int p = 0; p < points; ++p) {
      std::vector<double> row(static_cast<size_t>(width));
      bool ok = true;
      for (int64_t k = 0; k < width && ok; ++k) {
        const auto v = random_value(constraints.columns[static_cast<size_t>(k)], pools[static_cast<size_t>(k)],
                                    constraints.exact_input_values, type, rng);
        if (!v) ok = false;
        else row[static_cast<size_t>(k)] = *v;
      }
      if (ok) rows.push_back(std::move(row));
    }
    if (rows.empty()) continue;
    const auto prediction = model.predict(make_batch(rows, type, width));
    const auto& predictions = prediction.values;
    // A threshold at a prediction seen (ties exercise >= and <=), or between two of them.
    std::vector<double> sorted = predictions;
    std::sort(sorted.begin(), sorted.end());
    double c = sorted[static_cast<size_t>(unit(rng) * static_cast<double>(sorted.size() - 1))];
    if (unit(rng) < 0.3) c = std::nextafter(c, unit(rng) < 0.5 ? kInf : -kInf);
    // The largest or smallest prediction: a region's bound can equal it exactly.
    if (unit(rng) < 0.25) c = unit(rng) < 0.5 ? sorted.front() : sorted.back();
    const Comparison op = ops[rng() % 4];
    const auto region = label_class >= 0 ? flock::optimize::label_region(model, label_class, constraints)
                                         : flock::optimize::prediction_region(model, op, c, constraints);
    if (!region) {
      ADD_FAILURE() << "no region";
      return totals;
    }
    ++totals.rounds;
    if (region->none) ++totals.none;
    totals.narrowed_columns += region->columns_narrowed();
    for (size_t r = 0; r < rows.size(); ++r) {
      bool inside = !region->none;
      for (int64_t k = 0; k < width && inside; ++k)
        inside = region->columns[static_cast<size_t>(k)].contains(rows[r][static_cast<size_t>(k)]);
      const bool qualifies = label_class >= 0 ? prediction.labels.at(r) == model.signature().class_labels.at(
                                                                               static_cast<size_t>(label_class))
                                              : compare(op, predictions[r], c);
      if (qualifies) ++totals.qualifying;
      if (!inside) ++totals.filtered;
      if (qualifies && !inside) {
        std::string row_text;
        for (double v : rows[r]) row_text += fmt_double(v) + " ";
        ADD_FAILURE() << "prediction " << predictions[r] << " satisfies the comparison with " << c
                      << " but the row [" << row_text << "] is outside the region " << region->to_string()
                      << "; constraints " << constraints.to_string()
                      << (constraints.exact_input_values ? " (exact)" : " (rounded)");
        return totals;
      }
    }
  }
  return totals;
}

TEST(OptimizeRegion, RandomRegressorsAreSound) {
  RegionTotals all;
  uint64_t seed = 9000;
  std::vector<EnsembleSpec> specs;
  EnsembleSpec s;
  specs.push_back(s);
  s.mixed_modes = false;
  specs.push_back(s);
  s.aggregate = "AVERAGE";
  specs.push_back(s);
  s = {};
  s.double_thresholds = true;
  s.input_type = onnx::TensorProto::DOUBLE;
  specs.push_back(s);
  s = {};
  s.input_type = onnx::TensorProto::INT64;
  specs.push_back(s);
  s = {};
  s.n_trees = 20;
  s.max_depth = 6;
  s.n_features = 6;
  s.mixed_modes = false;
  specs.push_back(s);
  for (size_t k = 0; k < specs.size(); ++k) {
    for (int model_index = 0; model_index < 3; ++model_index) {
      SCOPED_TRACE("spec " + std::to_string(k) + " model " + std::to_string(model_index));
      std::mt19937_64 rng(seed++);
      const auto model = Model::load(bytes_of(random_ensemble(specs[k], rng)));
      const auto totals = check_region(*model, 40, 200, seed * 31);
      all.rounds += totals.rounds;
      all.qualifying += totals.qualifying;
      all.filtered += totals.filtered;
      all.narrowed_columns += totals.narrowed_columns;
      all.none += totals.none;
      if (HasFailure()) return;
    }
  }
  // Not vacuous: many rows qualify, and the regions exclude many others.
  EXPECT_GT(all.qualifying, 20000);
  EXPECT_GT(all.filtered, 1000);
  EXPECT_GT(all.narrowed_columns, 100);
  std::printf("[ region ] %lld rounds, %lld qualifying rows all inside, %lld rows filtered, %lld columns narrowed\n",
              static_cast<long long>(all.rounds), static_cast<long long>(all.qualifying),
              static_cast<long long>(all.filtered), static_cast<long long>(all.narrowed_columns));
}

TEST(OptimizeRegion, XGBoostRegressorIsSound) {
  const std::string text = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/reg_squarederror.model.json");
  const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  const auto totals = check_region(*model, 80, 200, 77);
  EXPECT_GT(totals.qualifying, 1000);
  EXPECT_GT(totals.narrowed_columns, 0);
  // A sigmoid after the trees, a classifier: not understood.
  const std::string logistic = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/reg_logistic.model.json");
  const auto sigmoid_model =
      Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(logistic.data()), logistic.size()));
  EXPECT_FALSE(flock::optimize::prediction_region(*sigmoid_model, Comparison::Greater, 0.5));
  EXPECT_FALSE(flock::optimize::prediction_region(*Model::load(bytes_of(sparse_linear())), Comparison::Greater, 0));
}

TEST(OptimizeRegion, KnownTree) {
  // Leaves 10 (x0 < 1 or missing, x1 <= 0), 20 (x0 < 1 or missing, x1 > 0 or missing),
  // 30 (1 <= x0 < 3), 40 (x0 >= 3).
  const auto model = Model::load(bytes_of(known_tree()));
  auto region = flock::optimize::prediction_region(*model, Comparison::Greater, 25, Constraints{});
  ASSERT_TRUE(region);
  ASSERT_FALSE(region->none);
  const auto& x0 = region->columns[0];
  EXPECT_FALSE(x0.all);
  EXPECT_FALSE(x0.missing_allowed);
  // Rounded values: one float step below 1.
  EXPECT_EQ(region->to_string({"a", "b"}), "(a >= 0.9999999403953552)");
  EXPECT_TRUE(region->columns[1].all);
  Constraints exact(2);
  exact.exact_input_values = true;
  region = flock::optimize::prediction_region(*model, Comparison::Greater, 25, exact);
  ASSERT_TRUE(region);
  EXPECT_EQ(region->to_string({"a", "b"}), "(a >= 1)");
  region = flock::optimize::prediction_region(*model, Comparison::LessOrEqual, 10, exact);
  ASSERT_TRUE(region);
  EXPECT_EQ(region->to_string({"a", "b"}), "(a <= 0.9999999403953552 or a is missing) AND (b <= 0)");
  region = flock::optimize::prediction_region(*model, Comparison::Greater, 40, exact);
  ASSERT_TRUE(region);
  EXPECT_TRUE(region->none);
  EXPECT_EQ(region->to_string(), "false");
}

TEST(OptimizeRegion, GeneratedModelsAreSound) {
  const char* dir = std::getenv("FLOCK_MODELS_DIR");
  if (!dir || !std::filesystem::is_directory(dir)) GTEST_SKIP() << "FLOCK_MODELS_DIR is not set";
  int checked = 0;
  uint64_t seed = 700;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (file.find(".onnx") == std::string::npos && file.find("_xgb.json") == std::string::npos) continue;
    SCOPED_TRACE(file);
    const std::string text = read_text(entry.path().string());
    std::shared_ptr<const Model> model;
    try {
      model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    } catch (const flock::Error&) {
      continue;
    }
    if (flock::optimize::label_region(*model, 1)) {
      for (int64_t k = 0; k < 2; ++k) {
        const auto totals = check_region(*model, 20, 150, seed++, k);
        std::printf("[ region ] %s label %lld: %lld qualifying rows inside, %lld filtered\n", file.c_str(),
                    static_cast<long long>(k), static_cast<long long>(totals.qualifying),
                    static_cast<long long>(totals.filtered));
      }
      ++checked;
      if (HasFailure()) return;
      continue;
    }
    if (!flock::optimize::prediction_region(*model, Comparison::Greater, 0)) continue;
    const auto totals = check_region(*model, 20, 150, seed++);
    ++checked;
    std::printf("[ region ] %s: %lld qualifying rows inside, %lld filtered\n", file.c_str(),
                static_cast<long long>(totals.qualifying), static_cast<long long>(totals.filtered));
    if (HasFailure()) return;
  }
  EXPECT_GT(checked, 0);
}

TEST(OptimizeRegion, BinaryClassifierLabelsAreSound) {
  RegionTotals all;
  // XGBoost binary:logistic (mixed-sign and all-positive leaves: label at margin 0 or 0.5).
  for (const char* name : {"binary_logistic", "binary_positive_leaves"}) {
    SCOPED_TRACE(name);
    const std::string text = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name + ".model.json");
    const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    for (int64_t k = 0; k < 2; ++k) {
      const auto totals = check_region(*model, 40, 200, 300 + static_cast<uint64_t>(k), k);
      EXPECT_GT(totals.qualifying, 100);
      all.filtered += totals.filtered;
      all.narrowed_columns += totals.narrowed_columns;
      if (HasFailure()) return;
    }
  }
  // Random ONNX classifiers scoring class 0 only, every branch mode, float and double input.
  uint64_t seed = 400;
  for (int input : {onnx::TensorProto::FLOAT, onnx::TensorProto::DOUBLE}) {
    for (int model_index = 0; model_index < 4; ++model_index) {
      EnsembleSpec spec;
      spec.classifier = true;
      spec.n_outputs = 2;
      spec.binary_single_class = true;
      spec.binary_class_id = 0;
      spec.post_transform = "LOGISTIC";
      spec.base_values = model_index % 2 == 0;
      spec.input_type = input;
      spec.double_thresholds = input == onnx::TensorProto::DOUBLE;
      std::mt19937_64 rng(seed++);
      const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
      ASSERT_TRUE(flock::optimize::label_region(*model, 1));
      for (int64_t k = 0; k < 2; ++k) {
        const auto totals = check_region(*model, 30, 200, seed * 13 + static_cast<uint64_t>(k), k);
        all.filtered += totals.filtered;
        all.narrowed_columns += totals.narrowed_columns;
        if (HasFailure()) return;
      }
    }
  }
  EXPECT_GT(all.filtered, 1000);
  EXPECT_GT(all.narrowed_columns, 50);
  // Not understood: class 1 scored by the leaves, several classes, a regressor, a bad index.
  std::mt19937_64 rng(5);
  EnsembleSpec other;
  other.classifier = true;
  other.n_outputs = 2;
  other.binary_single_class = true;
  EXPECT_FALSE(flock::optimize::label_region(*Model::load(bytes_of(random_ensemble(other, rng))), 1));
  other.binary_single_class = false;
  other.n_outputs = 3;
  EXPECT_FALSE(flock::optimize::label_region(*Model::load(bytes_of(random_ensemble(other, rng))), 1));
  EXPECT_FALSE(flock::optimize::label_region(*Model::load(bytes_of(known_tree())), 0));
  const std::string text = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/binary_logistic.model.json");
  const auto xgb = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  EXPECT_FALSE(flock::optimize::label_region(*xgb, 2));
}
// Every elementary cell of a small ensemble's input space, one point each: per column NaN, the
// infinities, and every threshold with the next value of the input type either side (the cells
// between two thresholds hold one of those). The exact largest and smallest predictions are among
// these points, so a region that is too tight (the tight bound's group merging) would leave out a
// qualifying point when c is at them.
std::vector<std::vector<double>> every_cell(const Model& model, int64_t width, ElemType type) {
  std::vector<std::vector<double>> per_column;
  for (const auto& thresholds : thresholds_by_column(model, width)) {
    std::vector<double> v = {kNaN, kInf, -kInf};
    for (double t : thresholds) {
      if (type == ElemType::Double) {
        for (double x : {t, std::nextafter(t, kInf), std::nextafter(t, -kInf)}) v.push_back(x);
      } else {
        const float f = static_cast<float>(t);
        for (float x : {f, std::nextafter(f, HUGE_VALF), std::nextafter(f, -HUGE_VALF)}) v.push_back(x);
      }
    }
    per_column.push_back(std::move(v));
  }
  std::vector<std::vector<double>> rows = {{}};
  for (const auto& values : per_column) {
    std::vector<std::vector<double>> next;
    for (const auto& row : rows)
      for (double x : values) {
        next.push_back(row);
        next.back().push_back(x);
      }
    rows = std::move(next);
  }
  return rows;
}

// Soundness against every cell: each row allowed by the constraints whose prediction (or label)
// qualifies lies in the region, for thresholds at the exact extremes and between predictions.
RegionTotals check_region_exhaustive(const Model& model, int rounds, uint64_t seed, int64_t label_class = -1) {
  RegionTotals totals;
  const auto& spec = model.signature().inputs.at(0);
  const int64_t width = spec.width;
  const auto all_rows = every_cell(model, width, spec.type);
  const auto thresholds = thresholds_by_column(model, width);
  std::vector<std::vector<double>> pools;
  for (const auto& t : thresholds) pools.push_back(interesting_values(t));
  const auto prediction = model.predict(make_batch(all_rows, spec.type, width));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0, 1);
  const Comparison ops[] = {Comparison::Greater, Comparison::GreaterOrEqual, Comparison::Less,
                            Comparison::LessOrEqual};
  for (int round = 0; round < rounds; ++round) {
    Constraints constraints(static_cast<size_t>(width));
    constraints.exact_input_values = true;
    if (round % 2 != 0)
      for (int64_t k = 0; k < width; ++k)
        if (unit(rng) < 0.4) constraints.columns[static_cast<size_t>(k)] = random_constraint(pools[static_cast<size_t>(k)], rng);
    if (constraints.unsatisfiable()) continue;
    std::vector<size_t> allowed;
    for (size_t r = 0; r < all_rows.size(); ++r) {
      bool ok = true;
      for (int64_t k = 0; k < width && ok; ++k)
        ok = constraints.columns[static_cast<size_t>(k)].contains(all_rows[r][static_cast<size_t>(k)]);
      if (ok) allowed.push_back(r);
    }
    if (allowed.empty()) continue;
    std::vector<double> sorted;
    for (size_t r : allowed) sorted.push_back(prediction.values[r]);
    std::sort(sorted.begin(), sorted.end());
    const Comparison op = ops[rng() % 4];
    const double u = unit(rng);
    double c = u < 0.25 ? sorted.back() : u < 0.5 ? sorted.front()
                                                   : sorted[static_cast<size_t>(unit(rng) * static_cast<double>(sorted.size() - 1))];
    if (unit(rng) < 0.3) c = std::nextafter(c, unit(rng) < 0.5 ? kInf : -kInf);
    const auto region = label_class >= 0 ? flock::optimize::label_region(model, label_class, constraints)
                                         : flock::optimize::prediction_region(model, op, c, constraints);
    if (!region) {
      ADD_FAILURE() << "no region";
      return totals;
    }
    ++totals.rounds;
    if (region->none) ++totals.none;
    totals.narrowed_columns += region->columns_narrowed();
    for (size_t r : allowed) {
      const auto& row = all_rows[r];
      bool inside = !region->none;
      for (int64_t k = 0; k < width && inside; ++k) inside = region->columns[static_cast<size_t>(k)].contains(row[static_cast<size_t>(k)]);
      const bool qualifies = label_class >= 0 ? prediction.labels.at(r) == model.signature().class_labels.at(
                                                                               static_cast<size_t>(label_class))
                                              : compare(op, prediction.values[r], c);
      if (qualifies) ++totals.qualifying;
      if (!inside) ++totals.filtered;
      if (qualifies && !inside) {
        std::string row_text;
        for (double v : row) row_text += fmt_double(v) + " ";
        ADD_FAILURE() << "prediction " << prediction.values[r] << " satisfies the comparison with " << c
                      << " but the row [" << row_text << "] is outside the region " << region->to_string()
                      << "; constraints " << constraints.to_string();
        return totals;
      }
    }
  }
  return totals;
}

TEST(OptimizeRegion, EveryCellOfSmallEnsemblesIsSound) {
  RegionTotals all;
  uint64_t seed = 12000;
  std::vector<EnsembleSpec> specs;
  EnsembleSpec s;
  s.n_features = 3;
  s.n_trees = 10;
  s.max_depth = 3;
  specs.push_back(s);  // mixed modes, float
  s.mixed_modes = false;
  s.aggregate = "AVERAGE";
  specs.push_back(s);
  s = specs[0];
  s.double_thresholds = true;
  s.input_type = onnx::TensorProto::DOUBLE;
  specs.push_back(s);
  s = specs[0];
  s.n_trees = 24;
  s.max_depth = 2;
  specs.push_back(s);  // more trees than a group: the groups' extremes add up
  for (size_t k = 0; k < specs.size(); ++k) {
    for (int model_index = 0; model_index < 3; ++model_index) {
      SCOPED_TRACE("spec " + std::to_string(k) + " model " + std::to_string(model_index));
      std::mt19937_64 rng(seed++);
      const auto model = Model::load(bytes_of(random_ensemble(specs[k], rng)));
      const auto totals = check_region_exhaustive(*model, 24, seed * 7);
      all.rounds += totals.rounds;
      all.qualifying += totals.qualifying;
      all.filtered += totals.filtered;
      all.none += totals.none;
      all.narrowed_columns += totals.narrowed_columns;
      if (HasFailure()) return;
    }
  }
  // Binary classifiers' labels.
  for (int model_index = 0; model_index < 4; ++model_index) {
    EnsembleSpec spec;
    spec.n_features = 3;
    spec.n_trees = 12;
    spec.max_depth = 3;
    spec.classifier = true;
    spec.n_outputs = 2;
    spec.binary_single_class = true;
    spec.binary_class_id = 0;
    spec.post_transform = "LOGISTIC";
    std::mt19937_64 rng(seed++);
    const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
    for (int64_t k = 0; k < 2; ++k) {
      SCOPED_TRACE("classifier " + std::to_string(model_index) + " label " + std::to_string(k));
      const auto totals = check_region_exhaustive(*model, 12, seed * 11 + static_cast<uint64_t>(k), k);
      all.filtered += totals.filtered;
      all.qualifying += totals.qualifying;
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(all.qualifying, 100000);
  EXPECT_GT(all.filtered, 10000);
  std::printf("[ region ] every cell: %lld rounds, %lld qualifying rows all inside, %lld rows filtered, %lld none\n",
              static_cast<long long>(all.rounds), static_cast<long long>(all.qualifying),
              static_cast<long long>(all.filtered), static_cast<long long>(all.none));
}

// Three trees, each able to add 10 on its own but never all together: tree a adds 10 when x0 < 0,
// tree b when x1 < 0, tree c takes 20 away when both are. The per-tree extremes sum to 20; the
// largest prediction is 10, which the tight bound (the three trees in one group) finds.
onnx::ModelProto exclusive_trees() {
  // tree 0: x0 < 0 ? 10 : 0; tree 1: x1 < 0 ? 10 : 0; tree 2: x0 < 0 ? (x1 < 0 ? -20 : 0) : 0.
  return hand_tree_regressor(2, {.treeids = {0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2},
                                 .nodeids = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4},
                                 .featureids = {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0},
                                 .trueids = {1, 0, 0, 1, 0, 0, 1, 3, 0, 0, 0},
                                 .falseids = {2, 0, 0, 2, 0, 0, 2, 4, 0, 0, 0},
                                 .missing_true = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                                 .modes = {"BRANCH_LT", "LEAF", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "BRANCH_LT",
                                           "BRANCH_LT", "LEAF", "LEAF", "LEAF"},
                                 .values = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                                 .target_treeids = {0, 0, 1, 1, 2, 2, 2},
                                 .target_nodeids = {1, 2, 1, 2, 2, 3, 4},
                                 .target_weights = {10, 0, 10, 0, 0, -20, 0}});
}

TEST(OptimizeRegion, TightBoundSeesTreesThatExcludeEachOther) {
  const auto model = Model::load(bytes_of(exclusive_trees()));
  ASSERT_EQ(model->predict(make_batch({{-1, -1}, {-1, 1}, {1, -1}, {1, 1}}, ElemType::Float, 2)).values,
            (std::vector<double>{0, 10, 10, 0}));
  Constraints exact(2);
  exact.exact_input_values = true;
  // Above 15: no input (the per-tree extremes, 20, would allow some).
  auto region = flock::optimize::prediction_region(*model, Comparison::Greater, 15, exact);
  ASSERT_TRUE(region);
  EXPECT_TRUE(region->none);
  // Exactly 10: x0 < 0 with x1 >= 0, or the other way round; each column's region is everything
  // (both halves qualify with the other column chosen well) but the whole region is not empty.
  region = flock::optimize::prediction_region(*model, Comparison::GreaterOrEqual, 10, exact);
  ASSERT_TRUE(region);
  EXPECT_FALSE(region->none);
  // With x1 < 0 known, only x0 >= 0 reaches 10.
  Constraints negative_x1 = exact;
  negative_x1.columns[1] = FeatureConstraint{Interval::less_than(0), false};
  region = flock::optimize::prediction_region(*model, Comparison::GreaterOrEqual, 10, negative_x1);
  ASSERT_TRUE(region);
  ASSERT_FALSE(region->none);
  const auto& x0 = region->columns[0];
  EXPECT_FALSE(x0.contains(-1));
  EXPECT_FALSE(x0.contains(-1e-30));
  EXPECT_TRUE(x0.contains(0));
  EXPECT_TRUE(x0.contains(5));
  EXPECT_TRUE(x0.contains(kNaN));  // a missing x0 takes the false side: 10 from tree b
}

// The group bound only ever removes values from a region: with its budget, each column's region
// lies inside the per-tree bound's (budget 0), on random points; on ensembles of several
// trees it often narrows more.
TEST(OptimizeRegion, GroupBoundNarrowsWithinThePerTreeRegion) {
  int64_t extra_filtered = 0;
  uint64_t seed = 13000;
  for (int model_index = 0; model_index < 8; ++model_index) {
    EnsembleSpec spec;
    spec.n_trees = 6 + 4 * (model_index % 4);
    spec.mixed_modes = model_index % 2 == 0;
    std::mt19937_64 rng(seed++);
    const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
    const auto thresholds = thresholds_by_column(*model, spec.n_features);
    std::vector<std::vector<double>> pools;
    for (const auto& t : thresholds) pools.push_back(interesting_values(t));
    std::uniform_real_distribution<double> unit(0, 1);
    for (int round = 0; round < 20; ++round) {
      Constraints constraints(static_cast<size_t>(spec.n_features));
      constraints.exact_input_values = true;
      std::vector<std::vector<double>> rows;
      for (int p = 0; p < 300; ++p) {
        std::vector<double> row;
        for (int64_t k = 0; k < spec.n_features; ++k)
          row.push_back(*random_value(constraints.columns[static_cast<size_t>(k)], pools[static_cast<size_t>(k)], true,
                                      ElemType::Float, rng));
        rows.push_back(std::move(row));
      }
      auto predictions = model->predict(make_batch(rows, ElemType::Float, spec.n_features)).values;
      std::sort(predictions.begin(), predictions.end());
      const double c = predictions[static_cast<size_t>((0.8 + 0.2 * unit(rng)) * static_cast<double>(predictions.size() - 1))];
      const Comparison op = round % 2 ? Comparison::Greater : Comparison::GreaterOrEqual;
      const auto per_tree = flock::optimize::prediction_region(*model, op, c, constraints, {0});
      const auto grouped = flock::optimize::prediction_region(*model, op, c, constraints);
      ASSERT_TRUE(per_tree && grouped);
      if (per_tree->none) {
        EXPECT_TRUE(grouped->none);
        continue;
      }
      for (const auto& row : rows) {
        bool in_per_tree = true, in_grouped = !grouped->none;
        for (size_t k = 0; k < row.size(); ++k) {
          in_per_tree = in_per_tree && per_tree->columns[k].contains(row[k]);
          in_grouped = in_grouped && grouped->columns[k].contains(row[k]);
        }
        EXPECT_TRUE(in_per_tree || !in_grouped) << "a row in the group bound's region but not the per-tree one's";
        if (in_per_tree && !in_grouped) ++extra_filtered;
      }
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(extra_filtered, 0);
  std::printf("[ region ] the group bound left out %lld more random rows than the per-tree bound\n",
              static_cast<long long>(extra_filtered));
}

// The group bound polls for interrupts: a cancel requested while a large ensemble's region is
// derived stops it with Error(Cancelled) (the host's query cancel), not a quiet nullopt.
TEST(OptimizeRegion, GroupBoundStopsOnInterrupt) {
  EnsembleSpec spec;
  spec.n_features = 6;
  spec.n_trees = 200;
  spec.max_depth = 6;
  std::mt19937_64 rng(14000);
  const auto model = Model::load(bytes_of(random_ensemble(spec, rng)));
  const auto unbounded = flock::optimize::prediction_region(*model, Comparison::Greater, -1e300);
  ASSERT_TRUE(unbounded);
  flock::set_interrupt_check([] { return true; });
  bool cancelled = false;
  try {
    (void)flock::optimize::prediction_region(*model, Comparison::Greater, -1e300);
  } catch (const flock::Error& e) {
    cancelled = e.code() == flock::ErrorCode::Cancelled;
  }
  flock::set_interrupt_check(nullptr);
  EXPECT_TRUE(cancelled);
  // Without the group bound nothing polls (the per-tree part is bounded by its own budget).
  flock::set_interrupt_check([] { return true; });
  EXPECT_TRUE(flock::optimize::prediction_region(*model, Comparison::Greater, -1e300, {}, {0}));
  flock::set_interrupt_check(nullptr);
}

// ---------------------------------------------------------------------------------------------
// F. Inlining: a model as an expression (as_expression / evaluate), linear folding, costs

// Rows of values a binding may hold: each column from its interesting values (thresholds, a float
// and a double step either side, infinities, 1e300, signed zeros), NaN, or random doubles.
std::vector<std::vector<double>> inline_rows(const Model& model, int n, std::mt19937_64& rng) {
  const int64_t width = model.signature().inputs.at(0).width;
  const auto thresholds = thresholds_by_column(model, width);
  std::vector<std::vector<double>> pools;
  for (const auto& t : thresholds) pools.push_back(interesting_values(t));
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<std::vector<double>> rows;
  for (int r = 0; r < n; ++r) {
    std::vector<double> row(static_cast<size_t>(width));
    for (int64_t k = 0; k < width; ++k) {
      const double u = unit(rng);
      double v;
      if (u < 0.1) v = kNaN;
      else if (u < 0.8) v = pools[static_cast<size_t>(k)][rng() % pools[static_cast<size_t>(k)].size()];
      else if (u < 0.9) v = (unit(rng) * 2 - 1) * std::pow(10.0, unit(rng) * 80 - 40);
      else v = unit(rng) * 6 - 3;
      row[static_cast<size_t>(k)] = v;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

bool same_double(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The expression against Model::predict on `n` random rows; returns the rows checked.
int64_t check_expression_bits(const Model& model, const flock::optimize::Expression& e, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto& in = model.signature().inputs.at(0);
  const auto rows = inline_rows(model, n, rng);
  const auto values = model.predict(make_batch(rows, in.type, in.width)).values;
  EXPECT_EQ(values.size(), rows.size());
  for (size_t r = 0; r < rows.size() && r < values.size(); ++r) {
    const double got = flock::optimize::evaluate(e, rows[r]);
    if (!same_double(got, values[r])) {
      std::string row;
      for (double v : rows[r]) row += fmt_double(v) + " ";
      ADD_FAILURE() << "row " << r << " [" << row << "]: expression " << fmt_double(got) << ", model "
                    << fmt_double(values[r]);
      return static_cast<int64_t>(r);
    }
  }
  return static_cast<int64_t>(rows.size());
}

TEST(OptimizeInline, RandomTreeRegressorsBitForBit) {
  struct InlineCase {
    const char* name;
    EnsembleSpec spec;
  };
  std::vector<InlineCase> cases;
  EnsembleSpec s;
  cases.push_back({"mixed_modes", s});
  s.mixed_modes = false;
  cases.push_back({"uniform_mode", s});
  s = {};
  s.aggregate = "AVERAGE";
  cases.push_back({"average", s});
  s.base_values = false;
  cases.push_back({"average_no_base", s});
  s = {};
  s.double_thresholds = true;
  s.input_type = onnx::TensorProto::DOUBLE;
  cases.push_back({"double_input_double_thresholds", s});
  s.input_type = onnx::TensorProto::FLOAT;
  cases.push_back({"float_input_double_thresholds", s});
  s = {};
  s.input_type = onnx::TensorProto::DOUBLE;
  cases.push_back({"double_input_float_thresholds", s});
  s = {};
  s.n_trees = 20;
  s.max_depth = 7;
  s.n_features = 8;
  cases.push_back({"twenty_deeper_trees", s});
  s = {};
  s.scaler = 1;
  cases.push_back({"behind_a_scaler", s});
  s.scaler = 2;
  s.input_type = onnx::TensorProto::DOUBLE;
  s.aggregate = "AVERAGE";
  cases.push_back({"behind_a_one_for_all_scaler_double_input", s});
  int64_t rows = 0;
  uint64_t seed = 9000;
  for (const auto& c : cases) {
    for (int m = 0; m < 4; ++m) {
      SCOPED_TRACE(std::string(c.name) + " model " + std::to_string(m));
      std::mt19937_64 rng(seed++);
      const auto model = Model::load(bytes_of(random_ensemble(c.spec, rng)));
      const auto e = flock::optimize::as_expression(*model, 1 << 20);
      ASSERT_TRUE(e.has_value());
      EXPECT_TRUE(e->bit_exact);
      EXPECT_FALSE(e->missing_is_error);
      rows += check_expression_bits(*model, *e, 2000, seed * 31);
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(rows, 50000);
}

// One branch on x0 (mode, threshold, missing_true) with leaves 1 and 2, float input.
onnx::ModelProto one_branch(const std::string& mode, float threshold, bool missing_true) {
  return hand_tree_regressor(1, {.treeids = {0, 0, 0},
                                 .nodeids = {0, 1, 2},
                                 .featureids = {0, 0, 0},
                                 .trueids = {1, 0, 0},
                                 .falseids = {2, 0, 0},
                                 .missing_true = {missing_true ? 1 : 0, 0, 0},
                                 .modes = {mode, "LEAF", "LEAF"},
                                 .values = {threshold, 0.0f, 0.0f},
                                 .target_treeids = {0, 0},
                                 .target_nodeids = {1, 2},
                                 .target_weights = {1.0f, 2.0f}});
}

TEST(OptimizeInline, BinaryClassifierLabelsBitForBit) {
  // Two-class classifiers whose label a margin decides (ORT's binary case, XGBoost's encodings):
  // flock.predict's value is the label; the expression's equals it on every input.
  int64_t rows = 0, inlined = 0;
  uint64_t seed = 7100;
  for (int variant = 0; variant < 6; ++variant) {
    for (int m = 0; m < 4; ++m) {
      EnsembleSpec s;
      s.classifier = true;
      s.n_outputs = 2;
      s.binary_single_class = variant % 3 != 2;
      s.binary_class_id = variant % 3 == 0 ? 0 : 1;
      s.post_transform = variant < 3 ? "LOGISTIC" : "NONE";
      s.input_type = m % 2 ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
      s.double_thresholds = m == 3;
      SCOPED_TRACE("variant " + std::to_string(variant) + " model " + std::to_string(m));
      std::mt19937_64 rng(seed++);
      const auto model = Model::load(bytes_of(random_ensemble(s, rng)));
      const auto e = flock::optimize::as_expression(*model, 1 << 20);
      // Exactly the classifiers whose label a margin decides.
      EXPECT_EQ(e.has_value(), flock::optimize::label_region(*model, 1).has_value());
      if (!e) continue;
      ++inlined;
      EXPECT_TRUE(e->bit_exact);
      rows += check_expression_bits(*model, *e, 1500, seed * 17);
      if (HasFailure()) return;
    }
  }
  EXPECT_GE(inlined, 8);
  EXPECT_GT(rows, 10000);
}

TEST(OptimizeInline, ThresholdsAtFloatBoundaries) {
  // Every mode against float thresholds at the edges of the float range, with the doubles that
  // round to the threshold, to its neighbours, and exactly half way (ties to even).
  const float finf = std::numeric_limits<float>::infinity();
  const std::vector<float> thresholds = {1.0f, 0.0f, -0.0f, 0.1f, std::nextafter(1.0f, 2.0f), FLT_MAX, -FLT_MAX,
                                         FLT_MIN, 1e-45f, -1e-45f, finf, -finf, std::nanf("")};
  int64_t checked = 0;
  for (const char* mode : {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"})
    for (float t : thresholds)
      for (bool missing_true : {false, true}) {
        SCOPED_TRACE(std::string(mode) + " " + fmt_double(t) + (missing_true ? " missing true" : ""));
        const auto model = Model::load(bytes_of(one_branch(mode, t, missing_true)));
        const auto e = flock::optimize::as_expression(*model);
        ASSERT_TRUE(e.has_value());
        std::vector<std::vector<double>> rows;
        for (float f : thresholds) {
          if (std::isnan(f)) continue;
          for (float g : {f, std::nextafter(f, finf), std::nextafter(f, -finf)}) {
            const double lo = g, hi = std::nextafter(g, finf);
            const double mid = std::isfinite(lo) && std::isfinite(hi) ? lo + (hi - lo) / 2 : lo;
            for (double v : {lo, mid, std::nextafter(mid, kInf), std::nextafter(mid, -kInf), 0x1.ffffffp127,
                             -0x1.ffffffp127, std::nextafter(0x1.ffffffp127, 0.0), 1e300, -1e300, kNaN})
              rows.push_back({v});
          }
        }
        const auto values = model->predict(make_batch(rows, ElemType::Float, 1)).values;
        for (size_t r = 0; r < rows.size(); ++r) {
          EXPECT_TRUE(same_double(flock::optimize::evaluate(*e, rows[r]), values[r])) << "x " << fmt_double(rows[r][0]);
          ++checked;
        }
        if (HasFailure()) return;
      }
  EXPECT_GT(checked, 10000);
}

TEST(OptimizeInline, XGBoostModelsBitForBit) {
  for (const std::string name : {"reg_squarederror", "binary_logistic", "binary_positive_leaves"}) {
    const std::string text = read_text(std::string(FLOCK_TEST_DATA_DIR) + "/xgb/" + name + ".model.json");
    const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    const auto e = flock::optimize::as_expression(*model, 1 << 22);
    ASSERT_TRUE(e.has_value()) << name;
    EXPECT_GT(check_expression_bits(*model, *e, 3000, 77), 2999);
  }
}

TEST(OptimizeInline, GeneratedTreeRegressorsBitForBit) {
  const char* dir = std::getenv("FLOCK_MODELS_DIR");
  if (!dir || !std::filesystem::is_directory(dir)) GTEST_SKIP() << "FLOCK_MODELS_DIR is not set";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string file = entry.path().filename().string();
    if (file.find(".onnx") == std::string::npos && file.find("_xgb.json") == std::string::npos) continue;
    const std::string text = read_text(entry.path().string());
    const auto model = Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    const auto e = flock::optimize::as_expression(*model, 1 << 22);
    if (!e) continue;
    SCOPED_TRACE(file);
    if (e->bit_exact) {
      EXPECT_GT(check_expression_bits(*model, *e, 1000, 99), 999);
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(OptimizeInline, WhatItDoesNotInline) {
  std::mt19937_64 rng(41);
  auto refused = [&](EnsembleSpec spec) {
    return !flock::optimize::as_expression(*Model::load(bytes_of(random_ensemble(spec, rng))), 1 << 20);
  };
  EnsembleSpec s;
  s.aggregate = "MIN";
  EXPECT_TRUE(refused(s));
  s = {};
  s.n_outputs = 3;
  EXPECT_TRUE(refused(s));
  s = {};
  s.classifier = true;
  s.n_outputs = 3;
  EXPECT_TRUE(refused(s));
  s = {};
  s.imputer = 1;
  EXPECT_TRUE(refused(s));
  s = {};
  s.input_type = onnx::TensorProto::INT64;
  EXPECT_TRUE(refused(s));
  s = {};
  s.post_transform = "PROBIT";
  EXPECT_TRUE(refused(s));
  // AVERAGE over a double leaf so small that the division could underflow to 0 (a float8 division
  // in SQL raises there); the same tree with a larger leaf is inlined.
  auto average_with_leaf = [](double leaf) {
    onnx::ModelProto m = one_branch("BRANCH_LEQ", 1.0f, false);
    auto* node = m.mutable_graph()->mutable_node(0);
    for (auto& a : *node->mutable_attribute())
      if (a.name() == "target_weights") {
        a.set_type(onnx::AttributeProto::TENSOR);
        a.clear_floats();
        a.set_name("target_weights_as_tensor");
        auto* t = a.mutable_t();
        t->set_data_type(onnx::TensorProto::DOUBLE);
        t->add_dims(2);
        t->add_double_data(leaf);
        t->add_double_data(2);
      }
    attr(node, "aggregate_function", onnx::AttributeProto::STRING)->set_s("AVERAGE");
    m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::DOUBLE);
    for (auto& o : *m.mutable_opset_import())
      if (o.domain() == "ai.onnx.ml") o.set_version(3);
    return flock::optimize::as_expression(*Model::load(bytes_of(m))).has_value();
  };
  EXPECT_FALSE(average_with_leaf(1e-310));
  EXPECT_TRUE(average_with_leaf(1e-3));
  // The size limit.
  s = {};
  s.n_trees = 50;
  s.max_depth = 6;
  const auto big = Model::load(bytes_of(random_ensemble(s, rng)));
  const auto full = flock::optimize::as_expression(*big, 1 << 20);
  ASSERT_TRUE(full.has_value());
  EXPECT_FALSE(flock::optimize::as_expression(*big, full->size() - 1));
  EXPECT_TRUE(flock::optimize::as_expression(*big, full->size()));
}

onnx::ModelProto random_linear(int64_t width, int elem_type, bool intercept, std::mt19937_64& rng,
                               bool scaler = false) {
  onnx::ModelProto m = base_model(width, elem_type, 1);
  if (scaler) {  // a Scaler with per-column parameters (some scales negative or zero) first
    auto* sn = m.mutable_graph()->add_node();
    sn->set_domain("ai.onnx.ml");
    sn->set_op_type("Scaler");
    sn->add_input("input");
    sn->add_output("scaled");
    auto* sc = attr(sn, "scale", onnx::AttributeProto::FLOATS);
    auto* off = attr(sn, "offset", onnx::AttributeProto::FLOATS);
    const std::vector<float> scales = {1, 2, -1, 0.5f, -2, 0, 0.1f}, offsets = {0, 0.5f, -1, 0.3f};
    for (int64_t k = 0; k < width; ++k) {
      sc->add_floats(scales[rng() % scales.size()]);
      off->add_floats(offsets[rng() % offsets.size()]);
    }
  }
  auto* node = m.mutable_graph()->add_node();
  node->set_op_type("LinearRegressor");
  node->set_domain("ai.onnx.ml");
  node->add_input(scaler ? "scaled" : "input");
  node->add_output("variable");
  std::uniform_real_distribution<double> unit(-3, 3);
  auto* c = attr(node, "coefficients", onnx::AttributeProto::FLOATS);
  for (int64_t k = 0; k < width; ++k) c->add_floats(rng() % 7 == 0 ? 0.0f : static_cast<float>(unit(rng)));
  if (intercept) attr(node, "intercepts", onnx::AttributeProto::FLOATS)->add_floats(static_cast<float>(unit(rng)));
  value_info(m.mutable_graph()->add_output(), "variable", onnx::TensorProto::FLOAT, {1});
  return m;
}

// Within a relative 1e-6 of the size of the terms (NaN where the model gives NaN, infinities equal).
::testing::AssertionResult close_linear(double got, double want, double scale) {
  if (std::isnan(want) || std::isnan(got)) {
    if (std::isnan(want) && std::isnan(got)) return ::testing::AssertionSuccess();
  } else if (std::isinf(want) || std::isinf(got)) {
    if (got == want) return ::testing::AssertionSuccess();
  } else if (std::fabs(got - want) <= 1e-6 * std::max({1.0, std::fabs(want), scale})) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << fmt_double(got) << " vs " << fmt_double(want);
}

TEST(OptimizeInline, LinearRegressorsWithinTolerance) {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> unit(0, 1);
  int64_t rows_checked = 0;
  for (int m = 0; m < 40; ++m) {
    const int64_t width = 1 + static_cast<int64_t>(rng() % 12);
    const int elem = m % 2 ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
    const auto model = Model::load(bytes_of(random_linear(width, elem, m % 3 != 0, rng, m % 4 == 1)));
    const auto e = flock::optimize::as_expression(*model);
    ASSERT_TRUE(e.has_value());
    EXPECT_FALSE(e->bit_exact);
    EXPECT_TRUE(e->missing_is_error);
    std::vector<std::vector<double>> rows;
    for (int r = 0; r < 300; ++r) {
      std::vector<double> row(static_cast<size_t>(width));
      for (double& v : row) {
        const double u = unit(rng);
        v = u < 0.02 ? kNaN : u < 0.04 ? (unit(rng) < 0.5 ? kInf : -kInf) : u < 0.06 ? 1e300 : u < 0.1 ? kGrid[rng() % kGrid.size()] : unit(rng) * 200 - 100;
      }
      rows.push_back(std::move(row));
    }
    const auto& in = model->signature().inputs[0];
    const auto values = model->predict(make_batch(rows, in.type, in.width)).values;
    for (size_t r = 0; r < rows.size(); ++r) {
      double scale = 0;
      for (double v : rows[r]) scale += std::isfinite(v) ? std::fabs(v) * 3 : 0;
      EXPECT_TRUE(close_linear(flock::optimize::evaluate(*e, rows[r]), values[r], scale)) << "model " << m << " row " << r;
      ++rows_checked;
    }
    if (HasFailure()) return;
  }
  EXPECT_GT(rows_checked, 10000);
}

TEST(OptimizeFoldLinear, FixedColumnsFoldIntoTheIntercept) {
  std::mt19937_64 rng(23);
  std::uniform_real_distribution<double> unit(0, 1);
  int64_t rows_checked = 0, folded_total = 0;
  for (int m = 0; m < 40; ++m) {
    const int64_t width = 2 + static_cast<int64_t>(rng() % 10);
    const int elem = m % 2 ? onnx::TensorProto::DOUBLE : onnx::TensorProto::FLOAT;
    const auto model = Model::load(bytes_of(random_linear(width, elem, m % 3 != 0, rng)));
    Constraints c(static_cast<size_t>(width));
    std::vector<double> fixed(static_cast<size_t>(width), kNaN);
    for (int64_t k = 0; k < width; ++k) {
      const double u = unit(rng);
      if (u < 0.4) {
        fixed[static_cast<size_t>(k)] = u < 0.05 ? 1e300 : std::round(unit(rng) * 2000 - 1000) / 8;
        c.columns[static_cast<size_t>(k)] = FeatureConstraint{Interval::point(fixed[static_cast<size_t>(k)]), false};
      } else if (u < 0.5) {
        c.columns[static_cast<size_t>(k)] = FeatureConstraint{Interval::point(2.5), true};  // may be missing: kept
      }
    }
    int64_t folded = 0;
    const auto f = flock::optimize::fold_linear(*model, c, &folded);
    int64_t foldable = 0;
    for (double v : fixed) foldable += std::isfinite(v) && std::fabs(v) < 1e38;
    if (foldable == 0) {
      EXPECT_FALSE(f.has_value());
      continue;
    }
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(folded, foldable);
    folded_total += folded;
    // The folded columns are no longer read when finite (inputs_read), and predictions agree.
    std::vector<std::vector<double>> rows;
    for (int r = 0; r < 200; ++r) {
      std::vector<double> row(static_cast<size_t>(width));
      for (size_t k = 0; k < row.size(); ++k) {
        if (!std::isnan(fixed[k])) row[k] = fixed[k];
        else if (c.columns[k].values.is_all()) row[k] = unit(rng) < 0.02 ? kNaN : unit(rng) * 200 - 100;
        else row[k] = unit(rng) < 0.5 ? kNaN : 2.5;
      }
      rows.push_back(std::move(row));
    }
    const auto& in = model->signature().inputs[0];
    const auto before = model->predict(make_batch(rows, in.type, in.width)).values;
    const auto after = (*f)->predict(make_batch(rows, in.type, in.width)).values;
    for (size_t r = 0; r < rows.size(); ++r) {
      double scale = 0;
      for (double v : rows[r]) scale += std::isfinite(v) && std::fabs(v) < 1e38 ? std::fabs(v) * 3 : 0;
      EXPECT_TRUE(close_linear(after[r], before[r], scale)) << "model " << m << " row " << r;
      ++rows_checked;
    }
    if (HasFailure()) return;
  }
  EXPECT_GT(folded_total, 20);
  EXPECT_GT(rows_checked, 2000);
  // Not a linear regressor: nothing to fold.
  Constraints c(4);
  c.columns[0] = FeatureConstraint{Interval::point(1), false};
  EXPECT_FALSE(flock::optimize::fold_linear(*Model::load(bytes_of(known_tree())), c));
}

TEST(OptimizeCost, GrowsWithTheModel) {
  std::mt19937_64 rng(3);
  EnsembleSpec small, large;
  small.n_trees = 2;
  small.max_depth = 3;
  large.n_trees = 40;
  large.max_depth = 8;
  const double c_small = flock::optimize::cost(*Model::load(bytes_of(random_ensemble(small, rng))));
  const double c_large = flock::optimize::cost(*Model::load(bytes_of(random_ensemble(large, rng))));
  EXPECT_GE(c_small, 2);
  EXPECT_GT(c_large, 10 * c_small);
  EXPECT_LE(c_large, 40 * 9);
  EXPECT_EQ(flock::optimize::cost(*Model::load(bytes_of(sparse_linear()))), 4);
}
}  // namespace
