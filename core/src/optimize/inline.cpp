// Model inlining (flock/optimize.hpp, as_expression / evaluate), a per-row cost estimate (cost) and
// linear specialization (fold_linear).
//
// A tree becomes nested Branches. The kernel compares float(v) with a float threshold t for a float
// model; on the double v the same decision is a comparison with the last double that rounds to a
// float <= t (round to nearest even), so the expression never converts v (a planner's float8 ->
// float4 cast raises on overflow where the binding rounds to infinity). Sums follow the kernel's
// run_single: one leaf value per tree in tree order, in double from 0, then the base value.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <new>
#include <utility>

#include "../kernels/ml_linear.hpp"
#include "../kernels/ml_preprocess.hpp"
#include "../kernels/ml_tree.hpp"
#include "../model_internals.hpp"
#include "flock/optimize.hpp"
#include "graph_view.hpp"
#include "value_range.hpp"

namespace flock::optimize {
namespace {

using detail::Domain;
using detail::NodeValues;
using tree::Ensemble;
using tree::Node;

constexpr double kInf = std::numeric_limits<double>::infinity();
// The smallest magnitude that rounds to an infinite float: FLT_MAX + half its ulp (FLT_MAX's
// significand is odd, so the tie goes to infinity).
constexpr double kFloatOverflow = 0x1.ffffffp127;

struct TooBig {};  // past the node budget

class Builder {
 public:
  explicit Builder(int64_t max_nodes) : max_(max_nodes) {}
  Expression e;

  int32_t add(const ExprNode& n) {
    if (static_cast<int64_t>(e.nodes.size()) >= max_) throw TooBig{};
    e.nodes.push_back(n);
    return static_cast<int32_t>(e.nodes.size() - 1);
  }
  int32_t constant(double v) {
    ExprNode n;
    n.kind = ExprKind::Constant;
    n.value = v;
    return add(n);
  }
  int32_t input(int32_t column) {
    ExprNode n;
    n.kind = ExprKind::Input;
    n.column = column;
    return add(n);
  }
  int32_t binary(ExprKind kind, int32_t left, int32_t right) {
    ExprNode n;
    n.kind = kind;
    n.left = left;
    n.right = right;
    return add(n);
  }
  int32_t round_to_float(int32_t arg) {
    ExprNode n;
    n.kind = ExprKind::RoundToFloat;
    n.left = arg;
    return add(n);
  }

 private:
  int64_t max_;
};

// The largest double d with float(d) <= t (round to nearest even, overflow to infinity).
double last_at_most(float t) {
  if (t == std::numeric_limits<float>::infinity()) return kInf;
  if (t == -std::numeric_limits<float>::infinity()) return -kFloatOverflow;  // rounds to -inf
  if (t == FLT_MAX) return std::nextafter(kFloatOverflow, -kInf);
  const double lo = t, hi = std::nextafter(t, std::numeric_limits<float>::infinity());
  const double mid = lo + (hi - lo) / 2;  // exact: 25 significant bits
  // A tie rounds to the float with the even significand.
  return static_cast<float>(mid) <= t ? mid : std::nextafter(mid, -kInf);
}

struct Test {
  ExprTest test;
  double a = 0, b = 0;
};

// The branch's test on the value v the binding holds (non-missing), for a tree comparing in
// `domain`: exactly when compare(mode, x, t) holds, x = float(v) or v.
Test branch_test(uint8_t mode, double t, Domain domain) {
  if (std::isnan(t)) return {mode == tree::kNeq ? ExprTest::Always : ExprTest::Never};
  if (domain == Domain::Double) {
    switch (mode) {
      case tree::kLeq:
        return {ExprTest::LessEqual, t};
      case tree::kLt:
        return {ExprTest::Less, t};
      case tree::kGte:
        return {ExprTest::GreaterEqual, t};
      case tree::kGt:
        return {ExprTest::Greater, t};
      case tree::kEq:
        return {ExprTest::Equal, t};
      default:
        return {ExprTest::NotEqual, t};
    }
  }
  const float tf = static_cast<float>(t);  // a float threshold: exact
  const bool lowest = tf == -std::numeric_limits<float>::infinity();
  // float(v) < tf  <=>  float(v) <= the float below tf  <=>  v <= last_at_most(below).
  const double below =
      lowest ? -kInf : last_at_most(std::nextafter(tf, -std::numeric_limits<float>::infinity()));
  const double at = last_at_most(tf);
  switch (mode) {
    case tree::kLeq:
      return {ExprTest::LessEqual, at};
    case tree::kLt:
      return lowest ? Test{ExprTest::Never} : Test{ExprTest::LessEqual, below};
    case tree::kGte:
      return lowest ? Test{ExprTest::Always} : Test{ExprTest::Greater, below};
    case tree::kGt:
      return at == kInf ? Test{ExprTest::Never} : Test{ExprTest::Greater, at};
    case tree::kEq:
      return lowest ? Test{ExprTest::LessEqual, at} : Test{ExprTest::Between, below, at};
    default:
      return lowest ? Test{ExprTest::Greater, at} : Test{ExprTest::NotBetween, below, at};
  }
}

// Where a missing value goes at the branch: compare() is false for NaN except NEQ's.
bool missing_goes_yes(uint8_t mode, bool missing_true) { return missing_true || mode == tree::kNeq; }

// The model's single input and the step writing its only output, when that step reads the input
// directly or through one Scaler (per-column or one-for-all parameters).
struct SoleStep {
  detail::VectorInput in;
  const Kernel* kernel = nullptr;
  const preprocess::ScalerKernel* scaler = nullptr;
};

std::optional<SoleStep> sole_step(const Model& model) {
  if (model.signature().outputs.size() != 1) return std::nullopt;
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const auto in = detail::vector_input(model, g);
  if (!in || g.output_slots.size() != 1) return std::nullopt;
  for (const auto& step : g.steps) {
    if (step.inputs.empty()) continue;
    if (std::find(step.outputs.begin(), step.outputs.end(), g.output_slots[0]) == step.outputs.end())
      continue;
    if (step.inputs[0] == in->slot) return SoleStep{*in, step.kernel, nullptr};
    for (const auto& pre : g.steps) {
      const auto* scaler = dynamic_cast<const preprocess::ScalerKernel*>(pre.kernel);
      if (!scaler || pre.inputs.size() != 1 || pre.inputs[0] != in->slot || pre.outputs.size() != 1 ||
          pre.outputs[0] != step.inputs[0])
        continue;
      const size_t n = scaler->scales().size();
      if (n != scaler->offsets().size() || (n != 1 && static_cast<int64_t>(n) != in->width))
        return std::nullopt;
      return SoleStep{*in, step.kernel, scaler};
    }
    return std::nullopt;
  }
  return std::nullopt;
}

// Column k as the model's step sees it: Input k, or the Scaler's float arithmetic on it
// ((float(x) - offset) * scale, each float operation exact as one double operation rounded once).
// `rounded`: RoundToFloat(Input k) (what a linear model multiplies) rather than Input k.
int32_t column_expression(Builder& b, const SoleStep& s, int32_t k, bool rounded) {
  if (!s.scaler) return rounded ? b.round_to_float(b.input(k)) : b.input(k);
  const size_t p = s.scaler->scales().size() == 1 ? 0 : static_cast<size_t>(k);
  const int32_t shifted = b.round_to_float(b.binary(
      ExprKind::Add, b.round_to_float(b.input(k)), b.constant(-static_cast<double>(s.scaler->offsets()[p]))));
  return b.round_to_float(b.binary(ExprKind::Multiply, shifted, b.constant(s.scaler->scales()[p])));
}

// One tree as nested Branches (a shared subtree is emitted once per path, within the budget).
template <typename Values>
int32_t tree_expression(Builder& b, const SoleStep& s, const Ensemble& e, int32_t node, const Values& values,
                        Domain domain, int64_t width, bool first_tree, int depth) {
  if (node < 0 || static_cast<size_t>(node) >= e.nodes_f.size() || depth > 4096) throw TooBig{};
  const Node<float>& nd = e.nodes_f[static_cast<size_t>(node)];
  if (nd.mode == tree::kLeaf) {
    double v = values(static_cast<size_t>(node));
    // The kernel starts from 0: 0 + -0 is +0.
    if (first_tree && v == 0) v = 0;
    return b.constant(v);
  }
  if (nd.feature < 0 || nd.feature >= width) throw TooBig{};
  const int32_t yes = tree_expression(b, s, e, nd.yes, values, domain, width, first_tree, depth + 1);
  const int32_t no = tree_expression(b, s, e, nd.no, values, domain, width, first_tree, depth + 1);
  // Behind a Scaler the tested value is already a float: compared exactly, as doubles.
  const Test t = branch_test(nd.mode, values(static_cast<size_t>(node)), s.scaler ? Domain::Double : domain);
  ExprNode n;
  n.kind = ExprKind::Branch;
  n.test = t.test;
  n.a = t.a;
  n.b = t.b;
  n.missing_yes = missing_goes_yes(nd.mode, nd.missing_true != 0);
  n.column = s.scaler ? -1 : nd.feature;
  n.arg = s.scaler ? column_expression(b, s, nd.feature, false) : -1;
  n.left = yes;
  n.right = no;
  return b.add(n);
}

// Scaler parameters a translation can follow exactly (finite floats).
bool plain_scaler(const SoleStep& s) {
  if (!s.scaler) return true;
  for (float v : s.scaler->scales())
    if (!std::isfinite(v)) return false;
  for (float v : s.scaler->offsets())
    if (!std::isfinite(v)) return false;
  return true;
}

std::optional<Expression> tree_model(const SoleStep& s, const tree::TreeKernel& k, int64_t max_nodes) {
  if (!plain_scaler(s)) return std::nullopt;
  if (s.in.type != ElemType::Float && s.in.type != ElemType::Double) return std::nullopt;
  const auto rule = k.sum_rule();
  // Behind a Scaler the trees read its float output: float thresholds and leaves.
  const Domain domain = s.scaler ? Domain::Float : s.in.domain();
  if (!rule || !std::isfinite(rule->origin)) return std::nullopt;
  const Ensemble& e = k.ensemble();
  if (e.roots.empty()) return std::nullopt;
  const NodeValues values{e, domain};
  // Finite leaves whose sums cannot overflow: the expression's additions never reach infinity (a
  // planner's float8 addition raises where C++ gives infinity).
  double bound = std::fabs(rule->origin);
  // AVERAGE divides the sum, and a float8 division raises when a nonzero quotient underflows to 0:
  // every nonzero sum of leaves must be far above the smallest double. Float leaves are multiples
  // of 2^-149 (so are their sums); double leaves must be at least 2^-900 (their sums are then
  // multiples of 2^-952 or larger).
  double largest_leaf = 0;
  for (size_t i = 0; i < e.nodes_f.size(); ++i) {
    if (e.nodes_f[i].mode != tree::kLeaf) continue;
    const double v = values(i);
    if (!std::isfinite(v)) return std::nullopt;
    if (rule->average && domain == Domain::Double && v != 0 && std::fabs(v) < 0x1p-900) return std::nullopt;
    largest_leaf = std::max(largest_leaf, std::fabs(v));
  }
  bound += largest_leaf * static_cast<double>(e.roots.size());
  if (!(bound < 1e300)) return std::nullopt;

  Builder b(max_nodes);
  int32_t sum = -1;
  for (size_t t = 0; t < e.roots.size(); ++t) {
    const int32_t tree = tree_expression(b, s, e, e.roots[t], values, domain, s.in.width, t == 0, 0);
    sum = t == 0 ? tree : b.binary(ExprKind::Add, sum, tree);
  }
  if (rule->average) sum = b.binary(ExprKind::Divide, sum, b.constant(static_cast<double>(e.roots.size())));
  sum = b.binary(ExprKind::Add, sum, b.constant(rule->origin));
  b.e.root = b.round_to_float(sum);
  b.e.bit_exact = true;
  return std::move(b.e);
}

std::optional<Expression> linear_model(const SoleStep& s, const linear::LinearKernel& k, int64_t max_nodes) {
  if (!plain_scaler(s)) return std::nullopt;
  if (s.in.type != ElemType::Float && s.in.type != ElemType::Double) return std::nullopt;
  const auto affine = k.affine();
  if (!affine || static_cast<int64_t>(affine->coefficients.size()) != s.in.width) return std::nullopt;
  if (!std::isfinite(affine->intercept)) return std::nullopt;
  for (float c : affine->coefficients)
    if (!std::isfinite(c)) return std::nullopt;
  Builder b(max_nodes);
  int32_t sum = -1;
  for (size_t j = 0; j < affine->coefficients.size(); ++j) {
    // float(x) * float coefficient: exact in double (48 significant bits), never overflows.
    const int32_t term = b.binary(ExprKind::Multiply, column_expression(b, s, static_cast<int32_t>(j), true),
                                  b.constant(affine->coefficients[j]));
    sum = sum < 0 ? term : b.binary(ExprKind::Add, sum, term);
  }
  if (sum < 0) sum = b.constant(0);
  if (affine->has_intercept) sum = b.binary(ExprKind::Add, sum, b.constant(affine->intercept));
  b.e.root = b.round_to_float(sum);
  b.e.bit_exact = false;
  b.e.missing_is_error = true;
  return std::move(b.e);
}

// A two-class tree classifier reading the input directly whose label a margin decides: the tree
// step writing the model's label output, its labels as numbers.
std::optional<Expression> binary_classifier(const Model& model, int64_t max_nodes) {
  const Signature& sig = model.signature();
  const int label_output = ModelInternals::label_output(model);
  if (label_output < 0 || !sig.numeric_labels || sig.class_labels.size() != 2) return std::nullopt;
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const auto in = detail::vector_input(model, g);
  if (!in || (in->type != ElemType::Float && in->type != ElemType::Double) ||
      static_cast<size_t>(label_output) >= g.output_slots.size())
    return std::nullopt;
  const tree::TreeKernel* k = nullptr;
  for (const auto& step : g.steps) {
    const auto* t = dynamic_cast<const tree::TreeKernel*>(step.kernel);
    if (t && !step.inputs.empty() && step.inputs[0] == in->slot &&
        std::find(step.outputs.begin(), step.outputs.end(),
                  g.output_slots[static_cast<size_t>(label_output)]) != step.outputs.end())
      k = t;
  }
  if (!k) return std::nullopt;
  const auto rule = k->binary_label_rule();
  if (!rule || !std::isfinite(rule->origin) || !std::isfinite(rule->threshold)) return std::nullopt;
  double labels[2];
  for (size_t c = 0; c < 2; ++c) {
    size_t used = 0;
    const long long v = std::stoll(sig.class_labels[c], &used);
    if (used != sig.class_labels[c].size()) return std::nullopt;
    labels[c] = static_cast<double>(static_cast<int64_t>(v));
  }
  const Ensemble& e = k->ensemble();
  if (e.roots.empty()) return std::nullopt;
  // Per leaf its class-0 weight (at most one: binary_label_rule), else nothing added (0: the sum
  // starts at +0 and never becomes -0, so adding 0 changes no bit).
  auto class0 = [&](size_t node) {
    for (int64_t w = e.leaf_first[node], end = w + e.leaf_count[node]; w < end; ++w)
      if (w >= 0 && static_cast<size_t>(w) < e.w_id.size() && e.w_id[static_cast<size_t>(w)] == 0)
        return e.w_value[static_cast<size_t>(w)];
    return 0.0;
  };
  double largest = 0;
  for (size_t i = 0; i < e.nodes_f.size(); ++i) {
    if (e.nodes_f[i].mode != tree::kLeaf) continue;
    if (!std::isfinite(class0(i))) return std::nullopt;
    largest = std::max(largest, std::fabs(class0(i)));
  }
  if (!(largest * static_cast<double>(e.roots.size()) + std::fabs(rule->origin) < 1e300)) return std::nullopt;
  // The leaves' values are the class-0 weights, the branches' the thresholds.
  std::vector<double> leaf_value(e.nodes_f.size(), 0);
  for (size_t i = 0; i < e.nodes_f.size(); ++i)
    if (e.nodes_f[i].mode == tree::kLeaf) leaf_value[i] = class0(i);
  const Domain domain = in->domain();
  const NodeValues thresholds{e, domain};
  struct Values {
    const NodeValues& thresholds;
    const std::vector<double>& leaves;
    const Ensemble& e;
    double operator()(size_t i) const { return e.nodes_f[i].mode == tree::kLeaf ? leaves[i] : thresholds(i); }
  };
  Builder b(max_nodes);
  const SoleStep s{*in, k, nullptr};
  int32_t sum = -1;
  for (size_t t = 0; t < e.roots.size(); ++t) {
    const int32_t tree =
        tree_expression(b, s, e, e.roots[t], Values{thresholds, leaf_value, e}, domain, in->width, t == 0, 0);
    sum = t == 0 ? tree : b.binary(ExprKind::Add, sum, tree);
  }
  const int32_t margin = b.binary(ExprKind::Add, sum, b.constant(rule->origin));
  const int32_t yes = b.constant(labels[1]), no = b.constant(labels[0]);
  ExprNode n;
  n.kind = ExprKind::Branch;
  n.test = ExprTest::Greater;
  n.a = rule->threshold;
  n.column = -1;
  n.arg = margin;
  n.never_missing = true;
  n.left = yes;
  n.right = no;
  b.e.root = b.add(n);
  b.e.bit_exact = true;
  return std::move(b.e);
}

double round_to_float(double v) {
  if (std::isnan(v)) return v;
  if (v >= kFloatOverflow) return kInf;
  if (v <= -kFloatOverflow) return -kInf;
  return static_cast<float>(v);
}

bool test_holds(const ExprNode& n, double v) {
  switch (n.test) {
    case ExprTest::Less:
      return v < n.a;
    case ExprTest::LessEqual:
      return v <= n.a;
    case ExprTest::Greater:
      return v > n.a;
    case ExprTest::GreaterEqual:
      return v >= n.a;
    case ExprTest::Equal:
      return v == n.a;
    case ExprTest::NotEqual:
      return v != n.a;
    case ExprTest::Between:
      return n.a < v && v <= n.b;
    case ExprTest::NotBetween:
      return !(n.a < v && v <= n.b);
    case ExprTest::Always:
      return true;
    case ExprTest::Never:
      return false;
  }
  return false;
}

// Average root-to-leaf depth of the tree at `root` (leaves weighted equally), within a budget.
double average_depth(const Ensemble& e, int32_t root, int64_t& budget) {
  struct Frame {
    int32_t node;
    int depth;
  };
  std::vector<Frame> stack = {{root, 0}};
  double total = 0, leaves = 0;
  while (!stack.empty() && budget-- > 0) {
    const Frame f = stack.back();
    stack.pop_back();
    if (f.node < 0 || static_cast<size_t>(f.node) >= e.nodes_f.size()) continue;
    const Node<float>& nd = e.nodes_f[static_cast<size_t>(f.node)];
    if (nd.mode == tree::kLeaf) {
      total += f.depth;
      leaves += 1;
      continue;
    }
    stack.push_back({nd.yes, f.depth + 1});
    stack.push_back({nd.no, f.depth + 1});
  }
  return leaves > 0 ? total / leaves : std::log2(static_cast<double>(e.nodes_f.size()) + 1);
}

}  // namespace

std::optional<Expression> as_expression(const Model& model, int64_t max_nodes) {
  try {
    if (ModelInternals::label_output(model) >= 0) return binary_classifier(model, max_nodes);
    const auto s = sole_step(model);
    if (!s) return std::nullopt;
    if (const auto* t = dynamic_cast<const tree::TreeKernel*>(s->kernel))
      return tree_model(*s, *t, max_nodes);
    if (const auto* l = dynamic_cast<const linear::LinearKernel*>(s->kernel))
      return linear_model(*s, *l, max_nodes);
    return std::nullopt;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    return std::nullopt;  // TooBig, or a structure the kernels would refuse
  }
}

double evaluate(const Expression& e, std::span<const double> inputs) {
  std::vector<double> v(e.nodes.size());
  auto column = [&](int32_t k) {
    return k >= 0 && static_cast<size_t>(k) < inputs.size() ? inputs[static_cast<size_t>(k)]
                                                            : std::numeric_limits<double>::quiet_NaN();
  };
  for (size_t i = 0; i < e.nodes.size(); ++i) {
    const ExprNode& n = e.nodes[i];
    auto arg = [&](int32_t k) { return v[static_cast<size_t>(k)]; };
    switch (n.kind) {
      case ExprKind::Constant:
        v[i] = n.value;
        break;
      case ExprKind::Input:
        v[i] = column(n.column);
        break;
      case ExprKind::Branch: {
        const double x = n.column < 0 ? arg(n.arg) : column(n.column);
        const bool yes = std::isnan(x) ? n.missing_yes : test_holds(n, x);
        v[i] = arg(yes ? n.left : n.right);
        break;
      }
      case ExprKind::Add:
        v[i] = arg(n.left) + arg(n.right);
        break;
      case ExprKind::Multiply:
        v[i] = arg(n.left) * arg(n.right);
        break;
      case ExprKind::Divide:
        v[i] = arg(n.left) / arg(n.right);
        break;
      case ExprKind::RoundToFloat:
        v[i] = round_to_float(arg(n.left));
        break;
    }
  }
  return e.root >= 0 ? v[static_cast<size_t>(e.root)] : std::numeric_limits<double>::quiet_NaN();
}

double cost(const Model& model) {
  try {
    const ModelInternals::GraphView g = ModelInternals::graph(model);
    const auto in = detail::vector_input(model, g);
    const double width = in ? static_cast<double>(in->width) : 1;
    double total = 0;
    for (const auto& step : g.steps) {
      if (const auto* t = dynamic_cast<const tree::TreeKernel*>(step.kernel)) {
        const Ensemble& e = t->ensemble();
        int64_t budget = 1 << 20;  // nodes visited for the estimate; past it, log2 of the size
        for (const int32_t root : e.roots) total += 1 + average_depth(e, root, budget);
      } else if (const auto* l = dynamic_cast<const linear::LinearKernel*>(step.kernel)) {
        const auto read = l->weighted_columns(static_cast<int64_t>(width));
        const auto affine = l->affine();
        total += affine ? static_cast<double>(affine->coefficients.size()) : (read ? width : width * 2);
      } else {
        total += width;  // elementwise preprocessing, say (a dense layer is more: not known here)
      }
    }
    return std::max(total, 1.0);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    return 1;
  }
}

std::optional<std::shared_ptr<const Model>> fold_linear(const Model& model, const Constraints& constraints,
                                                        int64_t* folded) {
  if (folded) *folded = 0;
  try {
    const auto s = sole_step(model);
    if (!s || s->scaler) return std::nullopt;
    const auto* l = dynamic_cast<const linear::LinearKernel*>(s->kernel);
    if (!l || static_cast<int64_t>(constraints.columns.size()) != s->in.width) return std::nullopt;
    auto affine = l->affine();
    if (!affine || static_cast<int64_t>(affine->coefficients.size()) != s->in.width) return std::nullopt;
    int64_t count = 0;
    for (size_t j = 0; j < constraints.columns.size(); ++j) {
      const FeatureConstraint& c = constraints.columns[j];
      const auto& lo = c.values.lower();
      const auto& hi = c.values.upper();
      if (c.missing_allowed || !lo || !hi || lo->value != hi->value || !lo->closed || !hi->closed) continue;
      // The value the kernel multiplies: the column converted to float (infinite: not folded,
      // inf * 0 and inf - inf are NaN whatever the other terms).
      const double x = round_to_float(lo->value);
      if (!std::isfinite(x)) continue;
      affine->intercept += x * static_cast<double>(affine->coefficients[j]);
      affine->has_intercept = true;
      affine->coefficients[j] = 0;
      ++count;
    }
    if (count == 0) return std::nullopt;
    const ModelInternals::GraphView g = ModelInternals::graph(model);
    for (size_t k = 0; k < g.steps.size(); ++k) {
      if (g.steps[k].kernel != s->kernel) continue;
      std::shared_ptr<const Kernel> replacement = l->with_affine(*affine);
      if (!replacement) return std::nullopt;
      if (folded) *folded = count;
      return ModelInternals::with_kernels(model, {{k, replacement}});
    }
    return std::nullopt;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace flock::optimize
