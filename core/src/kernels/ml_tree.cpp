// ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier (opsets 1 and 3).
//
// The semantics follow ONNX Runtime's CPU implementation (tree_ensemble_common.h,
// tree_ensemble_aggregator.h, ml_common.h) including its quirks, so that a model gives the same
// numbers here as in ORT:
//   * a tree's root is the first node (in attribute order) of each run of equal nodes_treeids;
//   * weights attached to a branch node are ignored (but still count for the classifier's
//     "binary case" and "all weights positive" flags); a leaf without weights adds nothing (with
//     one target: its nodes_values entry, like recent ORT);
//   * a regressor with n_targets == 1 uses only the first weight of each leaf (its value rounded
//     to the threshold type, float unless the input is double), adds base_values[0]
//     (when base_values has one value) and applies PROBIT only: other post_transforms (LOGISTIC,
//     SOFTMAX, SOFTMAX_ZERO) are ignored for a single target, exactly like ORT;
//   * with several targets/classes, a target no leaf wrote to reads as 0 after the base values
//     were added (ORT's ScoreValue::has_score);
//   * the two-class classifier follows ORT's FinalizeScores binary rules (see finalize_binary).
// Transforms (logistic, softmax, probit) are computed in float like ORT; scores accumulate in
// double. Thresholds compare in the input's type: float for float and int64 input (the int64
// value converted to float), double for double input.
//
// Speed: the factory compiles the attributes once into flat node arrays (pre-order, leaves
// pointing to themselves) and validates every id. On float input, an ensemble whose branches all
// use one of LEQ/LT/GTE/GT and whose trees are at most kMaxPerfectDepth deep also gets a
// "perfect-tree" layout (see Fast below): each tree padded to a complete binary tree stored in heap
// order, so every row takes exactly `depth` branch-free steps. run() copies blocks of 128 rows
// column-major into a scratch buffer (NaN resolved there, per node, by the column a node reads)
// and walks trees outer, 16 rows at a time inner — or for fewer than 8 rows, 8 trees at a time.
// On a CPU with AVX-512F the top five levels of each tree are evaluated with vector compares
// instead (walk_top_avx512), and the walk continues from there.
// Other ensembles (mixed or EQ/NEQ modes, deep trees, double or int64 input) walk the flat nodes:
// blocks of 128 rows tree by tree, 8 rows at a time, or for fewer than 8 rows 8 trees at a time.
// Scores accumulate per row in tree order in every path, so all paths give the same bits.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "flock/interrupt.hpp"
#include "flock/kernel.hpp"
#include "ml_tree.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace flock {
namespace {

using namespace tree;  // Mode, Node, Ensemble

// ----------------------------------------------------------------------------------------------
// Attribute enums

enum class Transform { None, Logistic, Softmax, SoftmaxZero, Probit };
enum class Aggregate { Sum, Average, Min, Max };

Mode parse_mode(const std::string& s, const Attrs& a, size_t i) {
  if (s == "BRANCH_LEQ") return kLeq;
  if (s == "BRANCH_LT") return kLt;
  if (s == "BRANCH_GTE") return kGte;
  if (s == "BRANCH_GT") return kGt;
  if (s == "BRANCH_EQ") return kEq;
  if (s == "BRANCH_NEQ") return kNeq;
  if (s == "LEAF") return kLeaf;
  fail(ErrorCode::UnsupportedOperator,
       fmt::format("{}: nodes_modes[{}] is '{}', which is not a tree node mode", a.where(), i, s),
       "Supported modes: BRANCH_LEQ, BRANCH_LT, BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ, LEAF.");
}

Transform parse_transform(const Attrs& a) {
  const std::string s = a.get_string("post_transform", "NONE");
  if (s == "NONE") return Transform::None;
  if (s == "LOGISTIC") return Transform::Logistic;
  if (s == "SOFTMAX") return Transform::Softmax;
  if (s == "SOFTMAX_ZERO") return Transform::SoftmaxZero;
  if (s == "PROBIT") return Transform::Probit;
  fail(ErrorCode::UnsupportedOperator, fmt::format("{}: post_transform '{}' is not supported", a.where(), s),
       "Supported post_transform values: NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT.");
}

Aggregate parse_aggregate(const Attrs& a) {
  const std::string s = a.get_string("aggregate_function", "SUM");
  if (s == "SUM") return Aggregate::Sum;
  if (s == "AVERAGE") return Aggregate::Average;
  if (s == "MIN") return Aggregate::Min;
  if (s == "MAX") return Aggregate::Max;
  fail(ErrorCode::UnsupportedOperator,
       fmt::format("{}: aggregate_function '{}' is not supported", a.where(), s),
       "Supported aggregate_function values: SUM, AVERAGE, MIN, MAX.");
}

// ----------------------------------------------------------------------------------------------
// ORT's float helpers (ml_common.h)

inline float compute_logistic(float val) {
  float v = 1 / (1 + std::exp(-std::abs(val)));
  return (val < 0) ? (1 - v) : v;
}

inline float erf_inv(float x) {
  float sgn = x < 0 ? -1.0f : 1.0f;
  x = (1 - x) * (1 + x);
  float lg = std::log(x);
  float v = 2 / (3.14159265358979323846f * 0.147f) + 0.5f * lg;
  float v2 = 1 / (0.147f) * lg;
  float v3 = -v + std::sqrt(v * v - v2);
  return sgn * std::sqrt(v3);
}

inline float compute_probit(float val) { return 1.41421356237309504880f * erf_inv(2 * val - 1); }

// Writes `n` (>= 2) effective scores through the post transform, as ORT's write_scores does.
void write_multi(const double* v, size_t n, Transform t, float* z) {
  switch (t) {
    case Transform::Probit:
      for (size_t k = 0; k < n; ++k) z[k] = compute_probit(static_cast<float>(v[k]));
      break;
    case Transform::Logistic:
      for (size_t k = 0; k < n; ++k) z[k] = compute_logistic(static_cast<float>(v[k]));
      break;
    case Transform::Softmax: {
      float vmax = -std::numeric_limits<float>::max();
      for (size_t k = 0; k < n; ++k) vmax = std::max(vmax, static_cast<float>(v[k]));
      float sum = 0.f;
      for (size_t k = 0; k < n; ++k) {
        z[k] = std::exp(static_cast<float>(v[k]) - vmax);
        sum += z[k];
      }
      for (size_t k = 0; k < n; ++k) z[k] = z[k] / sum;
      break;
    }
    case Transform::SoftmaxZero: {
      float vmax = -std::numeric_limits<float>::max();
      for (size_t k = 0; k < n; ++k) vmax = std::max(vmax, static_cast<float>(v[k]));
      const float exp_neg_vmax = std::exp(-vmax);
      float sum = 0.f;
      for (size_t k = 0; k < n; ++k) {
        float f = static_cast<float>(v[k]);
        if (f > 0.0000001f || f < -0.0000001f) {
          z[k] = std::exp(f - vmax);
          sum += z[k];
        } else {
          z[k] = f * exp_neg_vmax;
        }
      }
      for (size_t k = 0; k < n; ++k) z[k] = z[k] / sum;
      break;
    }
    case Transform::None:
      for (size_t k = 0; k < n; ++k) z[k] = static_cast<float>(v[k]);
      break;
  }
}

// ORT's write_scores for one score ("binary case"). `second` is ORT's add_second_class.
void write_single(double v, Transform t, int second, float* z) {
  if (t == Transform::Probit) {
    z[0] = compute_probit(static_cast<float>(v));
    return;
  }
  switch (second) {
    case 0:
    case 1:
      z[0] = static_cast<float>(1 - v);
      z[1] = static_cast<float>(v);
      break;
    case 2:
    case 3:
      if (t == Transform::Logistic) {
        z[1] = compute_logistic(static_cast<float>(v));
        z[0] = compute_logistic(static_cast<float>(-v));
      } else {
        z[0] = static_cast<float>(-v);
        z[1] = static_cast<float>(v);
      }
      break;
    default:
      z[0] = static_cast<float>(v);
      break;
  }
}

// ----------------------------------------------------------------------------------------------
// Compiled ensemble

struct PairHash {
  size_t operator()(const std::pair<int64_t, int64_t>& p) const noexcept {
    uint64_t h = static_cast<uint64_t>(p.first) * 0x9E3779B97F4A7C15ULL;
    h ^= static_cast<uint64_t>(p.second) + 0x7F4A7C159E3779B9ULL + (h << 6) + (h >> 2);
    return static_cast<size_t>(h);
  }
};

std::vector<double> numeric_attr(const Attrs& a, const std::string& name) {
  const std::string tname = name + "_as_tensor";
  if (a.has(name) && a.has(tname))
    fail(ErrorCode::InvalidModel, fmt::format("{} has both '{}' and '{}'; give only one", a.where(), name, tname));
  if (a.has(tname)) {
    Tensor t = a.get_tensor(tname);
    if (t.type != ElemType::Float && t.type != ElemType::Double && t.type != ElemType::Int64)
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: attribute '{}' must be a float or double tensor, not {}", a.where(), tname,
                       to_string(t.type)));
  }
  return a.get_doubles_or_floats(name);
}

std::string node_name(int64_t tree, int64_t node) { return fmt::format("tree {} node {}", tree, node); }

// An INTS attribute read in place (a large ensemble has millions of these values; empty if absent).
struct IntsView {
  const int64_t* data = nullptr;
  size_t n = 0;
  size_t size() const { return n; }
  bool empty() const { return n == 0; }
  int64_t operator[](size_t i) const { return data[i]; }
};

const onnx::AttributeProto* find_attr(const Attrs& a, const std::string& name) {
  for (const auto& at : a.node().attribute())
    if (at.name() == name) return &at;
  return nullptr;
}

IntsView ints_view(const Attrs& a, const std::string& name) {
  const onnx::AttributeProto* at = find_attr(a, name);
  if (!at) return {};
  return {at->ints().data(), static_cast<size_t>(at->ints_size())};
}

// Positions of nodes by (tree id, node id). Converters number the nodes of a tree 0..n-1, so
// when the ids are compact enough a table per tree replaces the hash map.
class NodeIndex {
 public:
  NodeIndex(const IntsView& trees, const IntsView& nodes) {
    const size_t n = trees.size();
    int64_t tmin = std::numeric_limits<int64_t>::max(), tmax = std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < n; ++i) {
      tmin = std::min(tmin, trees[i]);
      tmax = std::max(tmax, trees[i]);
    }
    const uint64_t span = static_cast<uint64_t>(tmax) - static_cast<uint64_t>(tmin);
    if (span < 2 * n + 16) {
      tmin_ = tmin;
      lo_.assign(span + 1, std::numeric_limits<int64_t>::max());
      std::vector<int64_t> hi(span + 1, std::numeric_limits<int64_t>::min());
      for (size_t i = 0; i < n; ++i) {
        const size_t t = static_cast<size_t>(trees[i] - tmin);
        lo_[t] = std::min(lo_[t], nodes[i]);
        hi[t] = std::max(hi[t], nodes[i]);
      }
      uint64_t total = 0;
      offset_.assign(span + 2, 0);
      for (size_t t = 0; t <= span; ++t) {
        offset_[t] = total;
        if (lo_[t] <= hi[t]) total += static_cast<uint64_t>(hi[t]) - static_cast<uint64_t>(lo_[t]) + 1;
        if (total > 4 * n + 64) break;
      }
      offset_[span + 1] = total;
      if (total <= 4 * n + 64) {
        dense_ = true;
        table_.assign(total, -1);
        return;
      }
      lo_.clear();
      offset_.clear();
    }
    map_.reserve(n * 2);
  }

  // Records node i; returns -1, or the position already recorded for the same ids.
  int32_t insert(int64_t tree, int64_t node, int32_t i) {
    if (dense_) {
      int32_t& slot = table_[slot_of(tree, node)];
      if (slot >= 0) return slot;
      slot = i;
      return -1;
    }
    auto [it, inserted] = map_.emplace(std::make_pair(tree, node), i);
    return inserted ? -1 : it->second;
  }

  int32_t find(int64_t tree, int64_t node) const {
    if (dense_) {
      if (tree < tmin_ || static_cast<uint64_t>(tree - tmin_) >= lo_.size()) return -1;
      const size_t t = static_cast<size_t>(tree - tmin_);
      if (node < lo_[t] || static_cast<uint64_t>(node - lo_[t]) >= offset_[t + 1] - offset_[t]) return -1;
      return table_[offset_[t] + static_cast<uint64_t>(node - lo_[t])];
    }
    auto it = map_.find({tree, node});
    return it == map_.end() ? -1 : it->second;
  }

 private:
  size_t slot_of(int64_t tree, int64_t node) const {
    const size_t t = static_cast<size_t>(tree - tmin_);
    return offset_[t] + static_cast<uint64_t>(node - lo_[t]);
  }

  bool dense_ = false;
  int64_t tmin_ = 0;
  std::vector<int64_t> lo_;        // per tree: lowest node id
  std::vector<uint64_t> offset_;   // per tree: first table entry (one more for the end)
  std::vector<int32_t> table_;
  std::unordered_map<std::pair<int64_t, int64_t>, int32_t, PairHash> map_;
};

// `prefix` is "target" (regressor) or "class" (classifier); `n_outputs` the number of targets or
// classes the weight ids index.
Ensemble compile_ensemble(const Attrs& a, const std::string& prefix, int64_t n_outputs) {
  const std::string where = a.where();
  const IntsView treeids = ints_view(a, "nodes_treeids");
  const IntsView nodeids = ints_view(a, "nodes_nodeids");
  const IntsView featureids = ints_view(a, "nodes_featureids");
  const onnx::AttributeProto* modes_attr = find_attr(a, "nodes_modes");
  const size_t n_modes = modes_attr ? static_cast<size_t>(modes_attr->strings_size()) : 0;
  const IntsView trueids = ints_view(a, "nodes_truenodeids");
  const IntsView falseids = ints_view(a, "nodes_falsenodeids");
  const IntsView missing = ints_view(a, "nodes_missing_value_tracks_true");
  const auto values = numeric_attr(a, "nodes_values");
  if (a.has("nodes_hitrates") && a.has("nodes_hitrates_as_tensor"))
    fail(ErrorCode::InvalidModel,
         fmt::format("{} has both 'nodes_hitrates' and 'nodes_hitrates_as_tensor'; give only one", where));

  const size_t n = treeids.size();
  if (n == 0) fail(ErrorCode::InvalidModel, fmt::format("{} has no tree nodes (nodes_treeids is empty)", where));
  if (n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail(ErrorCode::LimitExceeded, fmt::format("{} has {} nodes, more than Flock supports", where, n));
  auto check_len = [&](const char* name, size_t len) {
    if (len != n)
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: '{}' has {} values but nodes_treeids has {}", where, name, len, n));
  };
  check_len("nodes_nodeids", nodeids.size());
  check_len("nodes_featureids", featureids.size());
  check_len("nodes_modes", n_modes);
  check_len("nodes_truenodeids", trueids.size());
  check_len("nodes_falsenodeids", falseids.size());
  check_len(a.has("nodes_values_as_tensor") ? "nodes_values_as_tensor" : "nodes_values", values.size());
  if (!missing.empty()) check_len("nodes_missing_value_tracks_true", missing.size());

  std::vector<uint8_t> modes(n);
  for (size_t i = 0; i < n; ++i) modes[i] = parse_mode(modes_attr->strings(static_cast<int>(i)), a, i);

  NodeIndex index(treeids, nodeids);
  for (size_t i = 0; i < n; ++i) {
    const int32_t before = index.insert(treeids[i], nodeids[i], static_cast<int32_t>(i));
    if (before >= 0)
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: {} appears twice (nodes {} and {})", where, node_name(treeids[i], nodeids[i]), before, i));
  }
  auto lookup = [&](int64_t tree, int64_t node) -> int32_t { return index.find(tree, node); };

  // Children.
  std::vector<int32_t> yes(n, -1), no(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (modes[i] == kLeaf) continue;
    if (featureids[i] < 0 || featureids[i] >= std::numeric_limits<int32_t>::max())
      fail(ErrorCode::InvalidModel, fmt::format("{}: {} splits on feature {}, which is out of range", where,
                                                node_name(treeids[i], nodeids[i]), featureids[i]));
    yes[i] = lookup(treeids[i], trueids[i]);
    if (yes[i] < 0)
      fail(ErrorCode::InvalidModel, fmt::format("{}: {} has true child {}, which is not a node of tree {}", where,
                                                node_name(treeids[i], nodeids[i]), trueids[i], treeids[i]));
    no[i] = lookup(treeids[i], falseids[i]);
    if (no[i] < 0)
      fail(ErrorCode::InvalidModel, fmt::format("{}: {} has false child {}, which is not a node of tree {}", where,
                                                node_name(treeids[i], nodeids[i]), falseids[i], treeids[i]));
    if (yes[i] == static_cast<int32_t>(i) || no[i] == static_cast<int32_t>(i))
      fail(ErrorCode::InvalidModel,
           fmt::format("{}: {} is its own child", where, node_name(treeids[i], nodeids[i])));
  }

  // Cycles (iterative three-colour DFS over the whole node graph).
  {
    std::vector<uint8_t> colour(n, 0);  // 0 white, 1 on stack, 2 done
    std::vector<std::pair<int32_t, uint8_t>> stack;
    for (size_t s = 0; s < n; ++s) {
      if (colour[s] != 0) continue;
      stack.emplace_back(static_cast<int32_t>(s), 0);
      colour[s] = 1;
      while (!stack.empty()) {
        auto& [v, step] = stack.back();
        if (modes[v] == kLeaf || step == 2) {
          colour[v] = 2;
          stack.pop_back();
          continue;
        }
        int32_t c = step == 0 ? yes[v] : no[v];
        ++step;
        if (colour[c] == 1)
          fail(ErrorCode::InvalidModel, fmt::format("{}: tree {} has a cycle through node {}", where, treeids[c],
                                                    nodeids[c]));
        if (colour[c] == 0) {
          colour[c] = 1;
          stack.emplace_back(c, 0);
        }
      }
    }
  }

  // Weights.
  const std::string ids_name = prefix + "_ids", nodes_name = prefix + "_nodeids",
                    trees_name = prefix + "_treeids", weights_name = prefix + "_weights";
  const IntsView w_ids = ints_view(a, ids_name);
  const IntsView w_nodes = ints_view(a, nodes_name);
  const IntsView w_trees = ints_view(a, trees_name);
  const auto w_vals = numeric_attr(a, weights_name);
  const size_t nw = w_ids.size();
  if (w_nodes.size() != nw || w_trees.size() != nw || w_vals.size() != nw)
    fail(ErrorCode::InvalidModel,
         fmt::format("{}: {} ({}), {} ({}), {} ({}) and {} ({}) must have the same length", where, ids_name, nw,
                     nodes_name, w_nodes.size(), trees_name, w_trees.size(), weights_name, w_vals.size()));
  if (nw >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail(ErrorCode::LimitExceeded, fmt::format("{} has {} weights, more than Flock supports", where, nw));

  Ensemble e;
  std::vector<int32_t> w_node(nw, -1);
  std::vector<int32_t> count(n + 1, 0);
  {
    std::unordered_set<int64_t> distinct;
    for (size_t k = 0; k < nw; ++k) {
      if (w_ids[k] < 0 || w_ids[k] >= n_outputs)
        fail(ErrorCode::InvalidModel,
             fmt::format("{}: {}[{}] is {}, outside [0, {})", where, ids_name, k, w_ids[k], n_outputs));
      distinct.insert(w_ids[k]);
      if (w_vals[k] < 0) e.weights_all_positive = false;
      int32_t idx = lookup(w_trees[k], w_nodes[k]);
      if (idx < 0)
        fail(ErrorCode::InvalidModel, fmt::format("{}: weight {} is for {}, which does not exist", where, k,
                                                  node_name(w_trees[k], w_nodes[k])));
      if (modes[idx] != kLeaf) continue;  // ORT ignores weights on branch nodes
      w_node[k] = idx;
      ++count[idx + 1];
    }
    e.distinct_ids = distinct.size();
  }
  std::partial_sum(count.begin(), count.end(), count.begin());  // count[i] = first weight of node i
  std::vector<int32_t> fill(count.begin(), count.end() - 1);
  std::vector<int32_t> ordered_id(static_cast<size_t>(count[n]));
  std::vector<double> ordered_val(static_cast<size_t>(count[n]));
  for (size_t k = 0; k < nw; ++k) {  // keeps attribute order within a leaf, like ORT's stable sort
    if (w_node[k] < 0) continue;
    int32_t pos = fill[w_node[k]]++;
    ordered_id[pos] = static_cast<int32_t>(w_ids[k]);
    ordered_val[pos] = w_vals[k];
  }

  // Roots: the first node of each run of equal tree ids.
  std::vector<int32_t> old_roots;
  for (size_t i = 0; i < n; ++i) {
    if (i == 0 || treeids[i] != treeids[i - 1]) old_roots.push_back(static_cast<int32_t>(i));
  }

  // Renumber reachable nodes in pre-order (true child right after its parent).
  std::vector<int32_t> new_index(n, -1);
  std::vector<int32_t> order;
  order.reserve(n);
  {
    std::vector<int32_t> stack;
    for (int32_t r : old_roots) {
      stack.push_back(r);
      while (!stack.empty()) {
        int32_t v = stack.back();
        stack.pop_back();
        if (new_index[v] >= 0) continue;
        new_index[v] = static_cast<int32_t>(order.size());
        order.push_back(v);
        if (modes[v] != kLeaf) {
          stack.push_back(no[v]);
          stack.push_back(yes[v]);
        }
      }
    }
  }
  for (int32_t r : old_roots) e.roots.push_back(new_index[r]);

  // When every threshold and weight is a float (float attributes: always), the double nodes are
  // derived from the float ones on the first double input (DoubleNodes) instead of built here.
  auto is_float = [](double v) { return static_cast<double>(static_cast<float>(v)) == v || std::isnan(v); };
  const bool float_exact = std::all_of(values.begin(), values.end(), is_float) &&
                           std::all_of(ordered_val.begin(), ordered_val.end(), is_float);
  e.nodes_f.resize(order.size());
  if (!float_exact) e.nodes_d.resize(order.size());
  e.leaf_first.assign(order.size(), 0);
  e.leaf_count.assign(order.size(), 0);
  bool first_branch = true;
  for (size_t j = 0; j < order.size(); ++j) {
    const int32_t i = order[j];
    Node<double> nd{};
    nd.mode = modes[i];
    if (modes[i] == kLeaf) {
      // A leaf's threshold slot holds its single-target value: its first weight, or (no weight)
      // its nodes_values entry, as ORT's value_or_unique_weight.
      nd.threshold = count[i + 1] > count[i] ? ordered_val[static_cast<size_t>(count[i])] : values[i];
      nd.feature = 0;
      nd.yes = nd.no = static_cast<int32_t>(j);
      e.leaf_first[j] = static_cast<int32_t>(e.w_id.size());
      e.leaf_count[j] = count[i + 1] - count[i];
      for (int32_t k = count[i]; k < count[i + 1]; ++k) {
        e.w_id.push_back(ordered_id[k]);
        e.w_value.push_back(ordered_val[k]);
      }
    } else {
      nd.threshold = values[i];
      nd.feature = static_cast<int32_t>(featureids[i]);
      nd.yes = new_index[yes[i]];
      nd.no = new_index[no[i]];
      nd.missing_true = (!missing.empty() && missing[i] == 1) ? 1 : 0;
      e.max_feature = std::max<int64_t>(e.max_feature, featureids[i]);
      if (first_branch) {
        e.uniform_mode = modes[i];
        first_branch = false;
      } else if (e.uniform_mode != modes[i]) {
        e.uniform_mode = kMixed;
      }
    }
    if (!float_exact) e.nodes_d[j] = nd;
    e.nodes_f[j] = Node<float>{static_cast<float>(nd.threshold), nd.feature, nd.yes, nd.no, nd.mode, nd.missing_true};
  }
  if (first_branch) e.uniform_mode = kLeq;  // only leaves: any mode works
  return e;
}

// Validates an ensemble built outside compile_ensemble (the XGBoost importer) and derives what
// compile_ensemble would have computed: max_feature, uniform_mode and the classifier flags.
// Children must come after their parent and before the next tree's root, so the graph has no
// cycles and no tree reaches into another.
void check_ensemble(Ensemble& e, const std::string& where, const std::string& prefix, int64_t n_outputs) {
  const size_t n = e.nodes_f.size();
  auto bad = [&](const std::string& what) { fail(ErrorCode::InvalidModel, fmt::format("{}: {}", where, what)); };
  if (n == 0) bad("the ensemble has no tree nodes");
  if (n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    fail(ErrorCode::LimitExceeded, fmt::format("{} has {} nodes, more than Flock supports", where, n));
  if (e.roots.empty()) bad("the ensemble has no trees");
  if (e.leaf_first.size() != n || e.leaf_count.size() != n) bad("leaf weight tables do not match the nodes");
  if (e.w_id.size() != e.w_value.size()) bad("weight ids and values differ in length");
  for (size_t k = 0; k < e.roots.size(); ++k) {
    if (e.roots[k] < 0 || static_cast<size_t>(e.roots[k]) >= n || (k > 0 && e.roots[k] <= e.roots[k - 1]))
      bad(fmt::format("tree {} has root {}, out of order or outside [0, {})", k, e.roots[k], n));
  }
  e.max_feature = -1;
  e.uniform_mode = kMixed;
  bool first_branch = true;
  const int64_t nw = static_cast<int64_t>(e.w_id.size());
  size_t next_tree = 0;
  int64_t tree_end = e.roots[0];
  for (size_t i = 0; i < n; ++i) {
    while (next_tree < e.roots.size() && static_cast<int64_t>(i) >= tree_end) {
      ++next_tree;
      tree_end = next_tree < e.roots.size() ? e.roots[next_tree] : static_cast<int64_t>(n);
    }
    const Node<float>& nd = e.nodes_f[i];
    const int32_t self = static_cast<int32_t>(i);
    if (nd.mode == kLeaf) {
      if (nd.yes != self || nd.no != self || nd.feature != 0) bad(fmt::format("leaf {} has children", i));
      const int64_t first = e.leaf_first[i], count = e.leaf_count[i];
      if (first < 0 || count < 0 || first + count > nw) bad(fmt::format("leaf {} has weights outside the table", i));
      continue;
    }
    if (nd.mode > kNeq) bad(fmt::format("node {} has mode {}, not a tree node mode", i, nd.mode));
    if (e.leaf_count[i] != 0) bad(fmt::format("branch node {} carries weights", i));
    if (nd.feature < 0) bad(fmt::format("node {} splits on feature {}, which is out of range", i, nd.feature));
    if (nd.yes <= self || nd.no <= self || nd.yes >= tree_end || nd.no >= tree_end)
      bad(fmt::format("node {} has children {} and {}, which do not follow it within its tree [.., {})", i, nd.yes,
                      nd.no, tree_end));
    e.max_feature = std::max<int64_t>(e.max_feature, nd.feature);
    if (first_branch) {
      e.uniform_mode = nd.mode;
      first_branch = false;
    } else if (e.uniform_mode != nd.mode) {
      e.uniform_mode = kMixed;
    }
  }
  if (first_branch) e.uniform_mode = kLeq;  // only leaves: any mode works
  std::vector<uint8_t> seen(static_cast<size_t>(std::min<int64_t>(n_outputs, int64_t(1) << 24)), 0);
  e.weights_all_positive = true;
  e.distinct_ids = 0;
  for (int64_t k = 0; k < nw; ++k) {
    const int32_t id = e.w_id[static_cast<size_t>(k)];
    if (id < 0 || id >= n_outputs)
      bad(fmt::format("{}_ids[{}] is {}, outside [0, {})", prefix, k, id, n_outputs));
    if (!seen[static_cast<size_t>(id)]) {
      seen[static_cast<size_t>(id)] = 1;
      ++e.distinct_ids;
    }
    if (e.w_value[static_cast<size_t>(k)] < 0) e.weights_all_positive = false;
  }
  if (!e.nodes_d.empty() && e.nodes_d.size() != n) bad("float and double node tables differ in length");
}

// The nodes with double thresholds, for double input. An ensemble built without them (the
// XGBoost importer: float thresholds) gets them from the float nodes on first use.
class DoubleNodes {
 public:
  const std::vector<Node<double>>& get(const Ensemble& e) const {
    if (!e.nodes_d.empty()) return e.nodes_d;
    std::call_once(once_, [&] {
      built_.resize(e.nodes_f.size());
      for (size_t i = 0; i < e.nodes_f.size(); ++i) {
        const Node<float>& f = e.nodes_f[i];
        built_[i] = Node<double>{static_cast<double>(f.threshold), f.feature, f.yes, f.no, f.mode, f.missing_true};
      }
    });
    return built_;
  }
  size_t bytes() const { return built_.capacity() * sizeof(Node<double>); }

 private:
  mutable std::once_flag once_;
  mutable std::vector<Node<double>> built_;
};

// ----------------------------------------------------------------------------------------------
// Tree walking

template <typename T>
inline bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(x);
  else return false;
}

template <uint8_t M, typename T>
inline bool compare(uint8_t mode, T x, T t) {
  if constexpr (M == kLeq) return x <= t;
  else if constexpr (M == kLt) return x < t;
  else if constexpr (M == kGte) return x >= t;
  else if constexpr (M == kGt) return x > t;
  else if constexpr (M == kEq) return x == t;
  else if constexpr (M == kNeq) return x != t;
  else {
    switch (mode) {
      case kLeq: return x <= t;
      case kLt: return x < t;
      case kGte: return x >= t;
      case kGt: return x > t;
      case kEq: return x == t;
      default: return x != t;
    }
  }
}

// Walks `n` rows down one tree together (independent walks interleave, hiding load latency);
// leaves loop on themselves, so the walk stops when no row moved.
template <uint8_t M, int N, typename T, typename In>
inline void walk_group(const Node<T>* nodes, int32_t root, const In* const* row, int n, int32_t* idx) {
  const int count = N > 0 ? N : n;
  for (int j = 0; j < count; ++j) idx[j] = root;
  bool moved = true;
  while (moved) {
    moved = false;
    for (int j = 0; j < count; ++j) {
      const Node<T>& nd = nodes[idx[j]];
      const T x = static_cast<T>(row[j][nd.feature]);
      const bool go = compare<M>(nd.mode, x, nd.threshold) | (nd.missing_true & is_nan(x));
      const int32_t next = go ? nd.yes : nd.no;
      moved |= next != idx[j];
      idx[j] = next;
    }
  }
}

// Rows or trees walked together.
constexpr int kGroup = 8;

// Walks one row down `n` trees together (for small batches, where rows cannot interleave).
template <uint8_t M, int N, typename T, typename In>
inline void walk_trees(const Node<T>* nodes, const int32_t* roots, const In* row, int n, int32_t* idx) {
  const int count = N > 0 ? N : n;
  for (int j = 0; j < count; ++j) idx[j] = roots[j];
  bool moved = true;
  while (moved) {
    moved = false;
    for (int j = 0; j < count; ++j) {
      const Node<T>& nd = nodes[idx[j]];
      const T x = static_cast<T>(row[nd.feature]);
      const bool go = compare<M>(nd.mode, x, nd.threshold) | (nd.missing_true & is_nan(x));
      const int32_t next = go ? nd.yes : nd.no;
      moved |= next != idx[j];
      idx[j] = next;
    }
  }
}

// Visits every (row, leaf) pair of a block: trees outer, rows inner. on_leaf(row in block, node).
template <uint8_t M, typename T, typename In, typename F>
void visit_block(const Ensemble& e, const std::vector<Node<T>>& nodes, const In* x, int64_t stride, int64_t r0,
                 int64_t r1, F&& on_leaf) {
  const Node<T>* base = nodes.data();
  const In* row[kGroup];
  int32_t idx[kGroup];
  if (r1 - r0 < kGroup && e.max_feature >= 0) {
    // Few rows: interleave trees instead. Leaf roots are safe here since the row has >= 1 column.
    const int32_t* roots = e.roots.data();
    const int64_t n_trees = static_cast<int64_t>(e.roots.size());
    for (int64_t t = 0; t < n_trees; t += kGroup) {
      const int n = static_cast<int>(std::min<int64_t>(kGroup, n_trees - t));
      for (int64_t r = r0; r < r1; ++r) {
        if (n == kGroup) walk_trees<M, kGroup>(base, roots + t, x + r * stride, n, idx);
        else walk_trees<M, 0>(base, roots + t, x + r * stride, n, idx);
        for (int j = 0; j < n; ++j) on_leaf(r - r0, idx[j]);
      }
    }
    return;
  }
  for (int32_t root : e.roots) {
    if (base[root].mode == kLeaf) {  // a single-leaf tree reads no column
      for (int64_t r = r0; r < r1; ++r) on_leaf(r - r0, root);
      continue;
    }
    for (int64_t g = r0; g < r1; g += kGroup) {
      const int n = static_cast<int>(std::min<int64_t>(kGroup, r1 - g));
      for (int j = 0; j < n; ++j) row[j] = x + (g + j) * stride;
      if (n == kGroup) walk_group<M, kGroup>(base, root, row, n, idx);
      else walk_group<M, 0>(base, root, row, n, idx);
      for (int j = 0; j < n; ++j) on_leaf(g + j - r0, idx[j]);
    }
  }
}

template <typename T, typename In, typename F>
void visit_dispatch(const Ensemble& e, const std::vector<Node<T>>& nodes, const In* x, int64_t stride, int64_t r0,
                    int64_t r1, F&& on_leaf) {
  switch (e.uniform_mode) {
    case kLeq: visit_block<kLeq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kLt: visit_block<kLt>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kGte: visit_block<kGte>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kGt: visit_block<kGt>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kEq: visit_block<kEq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    case kNeq: visit_block<kNeq>(e, nodes, x, stride, r0, r1, on_leaf); break;
    default: visit_block<kMixed>(e, nodes, x, stride, r0, r1, on_leaf); break;
  }
}

// Accumulation state for one block of rows (trees outer, rows of the block inner).
struct Block {
  std::vector<double> s;   // rows x width
  std::vector<uint8_t> h;  // has_score
};

constexpr int64_t kBlockRows = 128;

// ----------------------------------------------------------------------------------------------
// Perfect-tree layout (float input)
//
// Each tree is padded to a complete binary tree of its depth D and stored in heap order: node i
// has its true child at 2i+1 and its false child at 2i+2, and leaf slot k (0 <= k < 2^D) sits at
// heap index 2^D - 1 + k. A row goes down with D steps of
//     i = 2i + 1 + go_false(x, threshold)
// with no data-dependent branch. A leaf above depth D continues through padding nodes (threshold
// NaN: every comparison is false, so they always take the true side) to the leftmost slot under
// it. The slots a row cannot reach hold the same leaf, so every slot names a real leaf.
//
// Missing values: a comparison with NaN is false, so a node whose missing values go to the true
// side (missing_true = 1) reads the column as is. A node whose missing values go to the false side
// reads a second copy of the column where NaN is replaced by +inf (LT, LEQ) or -inf (GTE, GT),
// which compares "false side" against every threshold the layout accepts (LEQ with threshold
// +inf and GTE with -inf are left to the generic walk). Rows are copied column-major into a
// buffer of kBlockRows rows per block, one column per (feature, NaN handling) the trees read.

constexpr int kMaxPerfectDepth = 12;
constexpr int kRowGroup = 16;   // rows walked together down one tree
constexpr int kTreeGroup = 8;   // trees walked together for one row (small batches)
constexpr int64_t kSmallRows = 8;

struct PNode {
  float thr;    // threshold (NaN for padding)
  int32_t off;  // buffer column * kBlockRows
};

struct PTree {
  int64_t node_begin = 0;  // first of 2^depth - 1 nodes in Fast::nodes
  int64_t slot_begin = 0;  // first of 2^depth slots
  int32_t depth = 0;
  int32_t target = -1;  // >= 0: every leaf has exactly one weight, for this target / class
};

struct Fast {
  bool enabled = false;
  uint8_t mode = kLt;
  std::vector<PTree> trees;        // in the order of Ensemble::roots
  std::vector<PNode> nodes;
  std::vector<int32_t> slot_node;  // per slot: the leaf (Ensemble node index)
  std::vector<double> slot_value;  // per slot of a tree with target >= 0: what it adds
  std::vector<int32_t> col_feature;  // per buffer column: the input column it copies
  std::vector<uint8_t> col_fill;     // per buffer column: 1 if NaN becomes fill_value
  float fill_value = 0;
  std::vector<int32_t> targets_always;  // targets every row gets a weight for (simple trees)
};

template <typename V>
size_t vector_bytes(const V& v) {
  return v.capacity() * sizeof(typename V::value_type);
}

// What an ensemble's kernel keeps in memory: the nodes and weights in both layouts.
size_t ensemble_bytes(const Ensemble& e, const Fast& f, const DoubleNodes& d) {
  return vector_bytes(e.nodes_f) + vector_bytes(e.nodes_d) + vector_bytes(e.roots) + vector_bytes(e.leaf_first) +
         vector_bytes(e.leaf_count) + vector_bytes(e.w_id) + vector_bytes(e.w_value) + vector_bytes(f.trees) +
         vector_bytes(f.nodes) + vector_bytes(f.slot_node) + vector_bytes(f.slot_value) +
         vector_bytes(f.col_feature) + vector_bytes(f.col_fill) + vector_bytes(f.targets_always) + d.bytes();
}

template <uint8_t M>
inline uint32_t go_false(float x, float t) {
  if constexpr (M == kLt) return x >= t;
  else if constexpr (M == kLeq) return x > t;
  else if constexpr (M == kGte) return x < t;
  else return x <= t;  // kGt
}

// `leaf_value(node)`: what a leaf adds on the sum path, `leaf_target(node)`: its single target or
// -1 when the leaf does not have exactly one weight.
template <typename V, typename G>
Fast build_fast(const Ensemble& e, V&& leaf_value, G&& leaf_target) {
  Fast f;
  const uint8_t m = e.uniform_mode;
  if (m != kLt && m != kLeq && m != kGte && m != kGt) return f;
  const auto& nd = e.nodes_f;
  const size_t n_trees = e.roots.size();
  f.mode = m;
  f.fill_value = (m == kLt || m == kLeq) ? std::numeric_limits<float>::infinity()
                                          : -std::numeric_limits<float>::infinity();
  // Depths (a node may be shared by several parents: count paths, stopping past the limit).
  f.trees.resize(n_trees);
  int64_t total_slots = 0;
  {
    std::vector<std::pair<int32_t, int32_t>> stack;
    for (size_t t = 0; t < n_trees; ++t) {
      int32_t depth = 0;
      int64_t visits = 0;
      stack.assign(1, {e.roots[t], 0});
      while (!stack.empty()) {
        auto [v, d] = stack.back();
        stack.pop_back();
        if (++visits > (int64_t(2) << kMaxPerfectDepth)) return Fast{};
        const auto& q = nd[static_cast<size_t>(v)];
        if (q.mode == kLeaf) {
          depth = std::max(depth, d);
          continue;
        }
        if (d + 1 > kMaxPerfectDepth || std::isnan(q.threshold)) return Fast{};
        if (!q.missing_true && ((m == kLeq && q.threshold == std::numeric_limits<float>::infinity()) ||
                                (m == kGte && q.threshold == -std::numeric_limits<float>::infinity())))
          return Fast{};
        stack.emplace_back(q.no, d + 1);
        stack.emplace_back(q.yes, d + 1);
      }
      f.trees[t].depth = depth;
      total_slots += int64_t(1) << depth;
    }
  }
  // Padding is bounded: at most 4 slots per node of the ensemble, plus some slack for small ones.
  if (total_slots > 4 * static_cast<int64_t>(nd.size()) + 65536) return Fast{};

  // Buffer columns: one per (feature, missing_true) pair the branches use.
  std::vector<int32_t> column_of(static_cast<size_t>(std::max<int64_t>(e.max_feature + 1, 0)) * 2, -1);
  auto column = [&](int32_t feature, bool fill) -> int32_t {
    int32_t& c = column_of[static_cast<size_t>(feature) * 2 + (fill ? 1 : 0)];
    if (c < 0) {
      c = static_cast<int32_t>(f.col_feature.size());
      f.col_feature.push_back(feature);
      f.col_fill.push_back(fill ? 1 : 0);
    }
    return c;
  };

  f.nodes.reserve(static_cast<size_t>(total_slots));
  f.slot_node.resize(static_cast<size_t>(total_slots));
  f.slot_value.assign(static_cast<size_t>(total_slots), 0.0);
  std::vector<uint8_t> has_target;
  struct Item {
    int32_t node;
    int64_t heap;
    int32_t level;
  };
  std::vector<Item> stack;
  int64_t node_begin = 0, slot_begin = 0;
  for (size_t t = 0; t < n_trees; ++t) {
    PTree& pt = f.trees[t];
    const int32_t D = pt.depth;
    const int64_t n_int = (int64_t(1) << D) - 1;
    pt.node_begin = node_begin;
    pt.slot_begin = slot_begin;
    f.nodes.resize(static_cast<size_t>(node_begin + n_int),
                   PNode{std::numeric_limits<float>::quiet_NaN(), 0});
    int32_t target = -2;  // -2: no leaf seen yet
    stack.assign(1, {e.roots[t], 0, 0});
    while (!stack.empty()) {
      const Item it = stack.back();
      stack.pop_back();
      const auto& q = nd[static_cast<size_t>(it.node)];
      if (q.mode != kLeaf) {
        const int32_t col = column(q.feature, !q.missing_true);
        f.nodes[static_cast<size_t>(node_begin + it.heap)] =
            PNode{q.threshold, static_cast<int32_t>(col * kBlockRows)};
        stack.push_back({q.no, 2 * it.heap + 2, it.level + 1});
        stack.push_back({q.yes, 2 * it.heap + 1, it.level + 1});
        continue;
      }
      // Every slot under this heap position (only the leftmost is reachable) names the leaf.
      const int32_t below = D - it.level;
      const int64_t first = (it.heap << below) + ((int64_t(1) << below) - 1) - n_int;
      const int32_t tg = leaf_target(it.node);
      target = (target == -2 || target == tg) ? tg : -1;
      const double value = leaf_value(it.node);
      for (int64_t k = 0; k < (int64_t(1) << below); ++k) {
        f.slot_node[static_cast<size_t>(slot_begin + first + k)] = it.node;
        f.slot_value[static_cast<size_t>(slot_begin + first + k)] = value;
      }
    }
    pt.target = target < 0 ? -1 : target;
    if (pt.target >= 0) {
      if (has_target.size() <= static_cast<size_t>(pt.target)) has_target.resize(static_cast<size_t>(pt.target) + 1);
      has_target[static_cast<size_t>(pt.target)] = 1;
    }
    node_begin += n_int;
    slot_begin += int64_t(1) << D;
  }
  if (static_cast<int64_t>(f.col_feature.size()) * kBlockRows >= std::numeric_limits<int32_t>::max()) return Fast{};
  for (size_t k = 0; k < has_target.size(); ++k)
    if (has_target[k]) f.targets_always.push_back(static_cast<int32_t>(k));
  f.enabled = true;
  return f;
}

// Copies rows [r0, r0 + n) into the column-major buffer, resolving NaN per column.
template <typename In>
void fill_block(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t n, float* buf) {
  const size_t n_cols = f.col_feature.size();
  for (size_t c = 0; c < n_cols; ++c) {
    float* dst = buf + c * kBlockRows;
    const In* src = x + r0 * stride + f.col_feature[c];
    if (f.col_fill[c]) {
      const float fill = f.fill_value;
      for (int64_t r = 0; r < n; ++r) {
        const float v = static_cast<float>(src[r * stride]);
        dst[r] = std::isnan(v) ? fill : v;
      }
    } else {
      for (int64_t r = 0; r < n; ++r) dst[r] = static_cast<float>(src[r * stride]);
    }
  }
}

// Keeps v in a general register: GCC 12's SLP vectorizer otherwise packs the 16 row indices of
// walk_rows into vectors and moves each lane out again for every node load (~10% slower).
inline void keep_scalar(uint32_t& v) {
#if defined(__GNUC__)
  asm("" : "+r"(v));
#endif
}

// Walks kRowGroup rows of the buffer (starting at `xr`) down one tree; slot[j] = leaf slot of row j.
// With `from` > 0 the rows start at level `from`, at the nodes idx[j] (the vector walk's top).
template <uint8_t M>
inline void walk_rows(const PNode* nd, int32_t depth, const float* xr, uint32_t* slot, int32_t from = 0,
                      const uint32_t* start = nullptr) {
  uint32_t idx[kRowGroup];
  for (int j = 0; j < kRowGroup; ++j) idx[j] = from > 0 ? start[j] : 0;
  for (int32_t d = from; d < depth; ++d) {
    for (int j = 0; j < kRowGroup; ++j) {
      const PNode q = nd[idx[j]];
      idx[j] = 2 * idx[j] + 1 + go_false<M>((xr + j)[q.off], q.thr);  // xr + j: a constant displacement
      keep_scalar(idx[j]);
    }
  }
  const uint32_t n_int = (uint32_t(1) << depth) - 1;
  for (int j = 0; j < kRowGroup; ++j) slot[j] = idx[j] - n_int;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AVX-512 form of the top of the walk, picked at run time (the build does not assume AVX-512).
// Gathers are slow on the CPUs measured (about 20 cycles for 16 lanes), so instead of walking,
// the first kTopLevels levels of a tree are *evaluated*: every one of its (up to 31) top nodes is
// compared against its column for 16 rows at a time with contiguous loads (the buffer is
// column-major), and each row collects one bit per node. The walk through those levels is then
// shifts and adds; deeper levels continue with walk_rows. The comparisons are the ordered, quiet
// forms of go_false's (NaN compares false), so every row takes exactly the scalar walk's path.
#define FLOCK_TREE_AVX512 1

constexpr int32_t kTopLevels = 5;  // 31 nodes: one bit each in a 32-bit lane

template <uint8_t M>
constexpr int avx512_go_false_predicate() {
  if constexpr (M == kLt) return _CMP_GE_OQ;
  else if constexpr (M == kLeq) return _CMP_GT_OQ;
  else if constexpr (M == kGte) return _CMP_LT_OQ;
  else return _CMP_LE_OQ;  // kGt
}

// The top of one tree for G groups of 16 rows starting at row r0 of the block buffer: after
// min(depth, kTopLevels) levels, top[r0 + j] is row j's node.
template <uint8_t M, int G>
__attribute__((target("avx512f"))) void walk_top_avx512(const PNode* nd, int32_t depth, const float* buf, int32_t r0,
                                                         uint32_t* top) {
  constexpr int kPred = avx512_go_false_predicate<M>();
  const int32_t levels = std::min(depth, kTopLevels);
  const int32_t n_top = (int32_t(1) << levels) - 1;
  __m512i bits[G];
  for (int g = 0; g < G; ++g) bits[g] = _mm512_setzero_si512();
  for (int32_t k = 0; k < n_top; ++k) {
    const __m512 t = _mm512_set1_ps(nd[k].thr);
    const __m512i bit = _mm512_set1_epi32(int32_t(1) << k);
    const float* col = buf + nd[k].off + r0;
    for (int g = 0; g < G; ++g) {
      const __mmask16 go_false = _mm512_cmp_ps_mask(_mm512_loadu_ps(col + 16 * g), t, kPred);
      bits[g] = _mm512_mask_or_epi32(bits[g], go_false, bits[g], bit);
    }
  }
  const __m512i one = _mm512_set1_epi32(1);
  for (int g = 0; g < G; ++g) {
    __m512i idx = _mm512_setzero_si512();
    for (int32_t d = 0; d < levels; ++d) {
      // (maskz_: the plain intrinsic trips GCC 12's -Wmaybe-uninitialized)
      const __m512i go_false = _mm512_and_si512(_mm512_maskz_srlv_epi32(0xFFFF, bits[g], idx), one);
      idx = _mm512_add_epi32(_mm512_add_epi32(idx, idx), _mm512_add_epi32(go_false, one));
    }
    _mm512_storeu_si512(top + r0 + 16 * g, idx);
  }
}

bool cpu_has_avx512f() {
  static const bool has = [] {
    __builtin_cpu_init();  // simd_walk_on is initialised by a constructor, maybe before libgcc's
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}
#else
bool cpu_has_avx512f() { return false; }
#endif

std::atomic<bool> simd_walk_on{cpu_has_avx512f()};

// Visits every (row, tree, slot) of rows [r0, r1) (one block), trees in order for every row:
// on(row in block, tree, global slot) for small blocks, and for the others, tree by tree,
// on_tree(tree, slot_begin, slot, n) with row r's global slot slot_begin + slot[r] (a caller's
// tight loop over the rows beats a call per row).
template <uint8_t M, typename F, typename G>
void visit_fast_mode(const Fast& f, const float* buf, int64_t n, F&& on, G&& on_tree) {
  const PNode* nodes = f.nodes.data();
  const PTree* trees = f.trees.data();
  const int64_t n_trees = static_cast<int64_t>(f.trees.size());
  if (n < kSmallRows) {
    // Few rows: walk kTreeGroup trees at once for each row.
    uint32_t idx[kTreeGroup];
    const PNode* base[kTreeGroup];
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = buf + r;
      for (int64_t t0 = 0; t0 < n_trees; t0 += kTreeGroup) {
        const int g = static_cast<int>(std::min<int64_t>(kTreeGroup, n_trees - t0));
        const PTree* pt = trees + t0;
        int32_t dmin = pt[0].depth, dmax = pt[0].depth;
        for (int j = 0; j < g; ++j) {
          idx[j] = 0;
          base[j] = nodes + pt[j].node_begin;
          dmin = std::min(dmin, pt[j].depth);
          dmax = std::max(dmax, pt[j].depth);
        }
        if (g == kTreeGroup && dmin == dmax) {  // the common case: a full group of equally deep trees
          for (int32_t d = 0; d < dmax; ++d) {
            for (int j = 0; j < kTreeGroup; ++j) {
              const PNode q = base[j][idx[j]];
              idx[j] = 2 * idx[j] + 1 + go_false<M>(xr[q.off], q.thr);
            }
          }
        } else {
          for (int32_t d = 0; d < dmax; ++d) {
            for (int j = 0; j < g; ++j) {
              if (d >= pt[j].depth) continue;
              const PNode q = base[j][idx[j]];
              idx[j] = 2 * idx[j] + 1 + go_false<M>(xr[q.off], q.thr);
            }
          }
        }
        for (int j = 0; j < g; ++j)
          on(r, t0 + j, pt[j].slot_begin + idx[j] - ((int64_t(1) << pt[j].depth) - 1));
      }
    }
    return;
  }
  uint32_t slot[kBlockRows];
#ifdef FLOCK_TREE_AVX512
  if (simd_walk_on.load(std::memory_order_relaxed)) {
    static_assert(kRowGroup == 16 && kBlockRows % kRowGroup == 0);
    uint32_t top[kBlockRows];
    for (int64_t t = 0; t < n_trees; ++t) {
      const PTree& pt = trees[t];
      const PNode* nd = nodes + pt.node_begin;
      if (n == kBlockRows) walk_top_avx512<M, kBlockRows / kRowGroup>(nd, pt.depth, buf, 0, top);
      else
        for (int32_t r = 0; r < n; r += kRowGroup) walk_top_avx512<M, 1>(nd, pt.depth, buf, r, top);
      const int32_t from = std::min(pt.depth, kTopLevels);
      for (int64_t r = 0; r < n; r += kRowGroup) walk_rows<M>(nd, pt.depth, buf + r, slot + r, from, top + r);
      on_tree(t, pt.slot_begin, static_cast<const uint32_t*>(slot), n);
    }
    return;
  }
#endif
  for (int64_t t = 0; t < n_trees; ++t) {
    const PTree& pt = trees[t];
    const PNode* nd = nodes + pt.node_begin;
    for (int64_t r = 0; r < n; r += kRowGroup) walk_rows<M>(nd, pt.depth, buf + r, slot + r);
    on_tree(t, pt.slot_begin, static_cast<const uint32_t*>(slot), n);
  }
}

// A scratch buffer per thread, kept between calls. Rows past a block's end (walked by the last
// group, results unused) hold values of earlier blocks or zeros, never uninitialized memory.
float* block_buffer(size_t n_cols) {
  static thread_local std::vector<float> buf;
  const size_t need = std::max<size_t>(n_cols, 1) * static_cast<size_t>(kBlockRows);
  if (buf.size() < need) buf.resize(need, 0.0f);
  return buf.data();
}

template <typename In, typename F, typename G>
void visit_fast(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t r1, F&& on, G&& on_tree) {
  float* buf = block_buffer(f.col_feature.size());
  const int64_t n = r1 - r0;
  fill_block(f, x, stride, r0, n, buf);
  switch (f.mode) {
    case kLt: visit_fast_mode<kLt>(f, buf, n, on, on_tree); break;
    case kLeq: visit_fast_mode<kLeq>(f, buf, n, on, on_tree); break;
    case kGte: visit_fast_mode<kGte>(f, buf, n, on, on_tree); break;
    default: visit_fast_mode<kGt>(f, buf, n, on, on_tree); break;
  }
}

template <typename In, typename F>
void visit_fast(const Fast& f, const In* x, int64_t stride, int64_t r0, int64_t r1, F&& on) {
  visit_fast(f, x, stride, r0, r1, on, [&](int64_t t, int64_t slot_begin, const uint32_t* slot, int64_t n) {
    for (int64_t r = 0; r < n; ++r) on(r, t, slot_begin + slot[r]);
  });
}

// Input shape: [N, C] or [C] (one row).
struct InputView {
  int64_t rows = 0;
  int64_t cols = 0;
};

InputView check_input(const std::vector<const Tensor*>& in, const Ensemble& e, const std::string& where) {
  if (in.empty() || in[0] == nullptr)
    fail(ErrorCode::InvalidInput, fmt::format("{} needs one input tensor", where));
  const Tensor& t = *in[0];
  if (t.type != ElemType::Float && t.type != ElemType::Double && t.type != ElemType::Int64)
    fail(ErrorCode::TypeMismatch,
         fmt::format("{} takes float, double or int64 input, not {}", where, to_string(t.type)));
  InputView v;
  if (t.shape.size() == 1) {
    v.rows = 1;
    v.cols = t.shape[0];
  } else if (t.shape.size() == 2) {
    v.rows = t.shape[0];
    v.cols = t.shape[1];
  } else {
    fail(ErrorCode::InvalidInput,
         fmt::format("{} takes a 1-D or 2-D input, got {} dimensions", where, t.shape.size()));
  }
  if (v.rows < 0 || v.cols < 0 || static_cast<int64_t>(t.size()) != t.numel())
    fail(ErrorCode::InvalidInput, fmt::format("{}: input holds {} values, its shape needs {}", where, t.size(),
                                              t.numel()));
  if (e.max_feature >= v.cols && v.rows > 0)
    fail(ErrorCode::InvalidInput,
         fmt::format("{} reads feature {} but the input has {} features per row", where, e.max_feature, v.cols));
  return v;
}

// Calls f(nodes, x) with typed pointers for the input's element type.
template <typename F>
void with_input(const Tensor& t, const Ensemble& e, const DoubleNodes& dn, F&& f) {
  switch (t.type) {
    case ElemType::Float: f(e.nodes_f, t.f.data()); break;
    case ElemType::Double: f(dn.get(e), t.d.data()); break;
    default: f(e.nodes_f, t.i.data()); break;  // int64 compared against float thresholds, like ORT
  }
}

// ----------------------------------------------------------------------------------------------
// Leaf visiting: the perfect-tree layout for float input when the ensemble has one, else the
// flat nodes. on_leaf(row in block, leaf node), trees in order for every row.

template <typename T, typename In, typename F>
void visit_leaves(const Ensemble& e, const Fast& f, const std::vector<Node<T>>& nodes, const In* x, int64_t stride,
                  int64_t r0, int64_t r1, F&& on_leaf) {
  if constexpr (std::is_same_v<In, float>) {
    if (f.enabled) {
      const int32_t* sn = f.slot_node.data();
      visit_fast(f, x, stride, r0, r1, [&](int64_t r, int64_t, int64_t slot) { on_leaf(r, sn[slot]); });
      return;
    }
  }
  visit_dispatch(e, nodes, x, stride, r0, r1, on_leaf);
}

template <typename In>
bool use_fast(const Fast& f) {
  return std::is_same_v<In, float> && f.enabled;
}

// Sum of every tree's weights into s (rows x K) and h, for rows [r0, r1): the fast layout adds the
// single weight of a "simple" tree's leaf directly (its target's h is preset by the caller),
// other leaves go through their weight lists.
template <typename T, typename In>
void sum_weights(const Ensemble& e, const Fast& f, const std::vector<Node<T>>& nodes, const In* x, int64_t stride,
                 int64_t r0, int64_t r1, size_t K, double* s, uint8_t* h) {
  const int32_t* wid = e.w_id.data();
  const double* wv = e.w_value.data();
  const int32_t* first = e.leaf_first.data();
  const int32_t* cnt = e.leaf_count.data();
  auto add_leaf = [&](int64_t r, int32_t leaf) {
    double* sr = s + r * static_cast<int64_t>(K);
    uint8_t* hr = h + r * static_cast<int64_t>(K);
    for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
      sr[wid[k]] += wv[k];
      hr[wid[k]] = 1;
    }
  };
  if constexpr (std::is_same_v<In, float>) {
    if (f.enabled) {
      const PTree* trees = f.trees.data();
      const double* sv = f.slot_value.data();
      const int32_t* sn = f.slot_node.data();
      auto on = [&](int64_t r, int64_t t, int64_t slot) {
        const int32_t c = trees[t].target;
        if (c >= 0) s[r * static_cast<int64_t>(K) + c] += sv[slot];
        else add_leaf(r, sn[slot]);
      };
      visit_fast(f, x, stride, r0, r1, on, [&](int64_t t, int64_t slot_begin, const uint32_t* slot, int64_t n) {
        const int32_t c = trees[t].target;
        if (c < 0) {
          for (int64_t r = 0; r < n; ++r) add_leaf(r, sn[slot_begin + slot[r]]);
          return;
        }
        const double* value = sv + slot_begin;
        double* sc = s + c;
        const int64_t width = static_cast<int64_t>(K);
        for (int64_t r = 0; r < n; ++r) sc[r * width] += value[slot[r]];
      });
      return;
    }
  }
  visit_dispatch(e, nodes, x, stride, r0, r1, add_leaf);
}

// Fast layout for kernels whose leaves carry weight lists (multi-target regressor, classifier).
Fast build_fast_weighted(const Ensemble& e) {
  return build_fast(
      e,
      [&](int32_t leaf) { return e.leaf_count[leaf] == 1 ? e.w_value[static_cast<size_t>(e.leaf_first[leaf])] : 0.0; },
      [&](int32_t leaf) { return e.leaf_count[leaf] == 1 ? e.w_id[static_cast<size_t>(e.leaf_first[leaf])] : -1; });
}

// ----------------------------------------------------------------------------------------------
// Regressor

class TreeRegressor final : public Kernel {
 public:
  explicit TreeRegressor(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = compile_ensemble(ctx.attrs, "target", n_targets_);
    finish();
  }
  TreeRegressor(const KernelContext& ctx, Ensemble&& e) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = std::move(e);
    check_ensemble(e_, where_, "target", n_targets_);
    finish();
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const InputView v = check_input(in, e_, where_);
    if (out.empty()) out.resize(1);
    Tensor& y = out[0];
    y = Tensor(ElemType::Float, {v.rows, n_targets_});
    if (v.rows == 0) return;
    with_input(*in[0], e_, nodes_d_, [&](const auto& nodes, const auto* x) {
      if (n_targets_ == 1) run_single(nodes, x, v, y.f.data());
      else run_multi(nodes, x, v, y.f.data());
    });
  }

  size_t memory_bytes() const override { return ensemble_bytes(e_, fast_, nodes_d_); }

 private:
  void read_attrs(const Attrs& a) {
    if (!a.has("n_targets"))
      fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute 'n_targets'", where_));
    n_targets_ = a.get_int("n_targets");
    if (n_targets_ < 1 || n_targets_ > (int64_t(1) << 24))
      fail(ErrorCode::InvalidModel, fmt::format("{}: n_targets is {}, it must be between 1 and 2^24", where_, n_targets_));
    transform_ = parse_transform(a);
    agg_ = parse_aggregate(a);
    base_ = numeric_attr(a, "base_values");
    if (!base_.empty() && static_cast<int64_t>(base_.size()) != n_targets_)
      fail(ErrorCode::InvalidModel, fmt::format("{}: base_values has {} values, n_targets is {}", where_,
                                                base_.size(), n_targets_));
  }

  void finish() {
    if (n_targets_ == 1) {
      // One target: a leaf adds its single-target value (float thresholds: float input only).
      fast_ = build_fast(
          e_, [&](int32_t leaf) { return static_cast<double>(e_.nodes_f[static_cast<size_t>(leaf)].threshold); },
          [](int32_t) { return 0; });
    } else {
      fast_ = build_fast_weighted(e_);
    }
  }

  template <typename T, typename In>
  void run_single(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, float* z) const {
    const double origin = base_.size() == 1 ? base_[0] : 0.0;
    const double n_trees = static_cast<double>(e_.roots.size());
    double s[kBlockRows];
    uint8_t h[kBlockRows];
    const Node<T>* nd = nodes.data();
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      std::fill(s, s + (r1 - r0), 0.0);
      std::fill(h, h + (r1 - r0), uint8_t(0));
      switch (agg_) {
        case Aggregate::Sum:
        case Aggregate::Average:
          if constexpr (std::is_same_v<In, float>) {
            if (fast_.enabled) {
              const double* sv = fast_.slot_value.data();
              visit_fast(
                  fast_, x, v.cols, r0, r1, [&](int64_t r, int64_t, int64_t slot) { s[r] += sv[slot]; },
                  [&](int64_t, int64_t slot_begin, const uint32_t* slot, int64_t n) {
                    const double* value = sv + slot_begin;
                    for (int64_t r = 0; r < n; ++r) s[r] += value[slot[r]];
                  });
              break;
            }
          }
          visit_dispatch(e_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) { s[r] += nd[leaf].threshold; });
          break;
        case Aggregate::Min:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            const double w = nd[leaf].threshold;
            if (!h[r] || w < s[r]) s[r] = w;
            h[r] = 1;
          });
          break;
        case Aggregate::Max:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            const double w = nd[leaf].threshold;
            if (!h[r] || w > s[r]) s[r] = w;
            h[r] = 1;
          });
          break;
      }
      for (int64_t r = r0; r < r1; ++r) {
        double val = s[r - r0];
        switch (agg_) {
          case Aggregate::Sum: val += origin; break;
          case Aggregate::Average: val = val / n_trees + origin; break;
          default: val = h[r - r0] ? val + origin : origin; break;
        }
        // ORT applies only PROBIT to a single target.
        z[r] = transform_ == Transform::Probit ? compute_probit(static_cast<float>(val)) : static_cast<float>(val);
      }
    }
  }

  template <typename T, typename In>
  void run_multi(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, float* z) const {
    const size_t K = static_cast<size_t>(n_targets_);
    const double n_trees = static_cast<double>(e_.roots.size());
    const bool use_base = base_.size() == K;
    Block b;
    b.s.resize(static_cast<size_t>(std::min(v.rows, kBlockRows)) * K);
    b.h.resize(b.s.size());
    std::vector<double> eff(K);
    const int32_t* wid = e_.w_id.data();
    const double* wv = e_.w_value.data();
    const int32_t* first = e_.leaf_first.data();
    const int32_t* cnt = e_.leaf_count.data();
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      const size_t used = static_cast<size_t>(r1 - r0) * K;
      std::fill(b.s.begin(), b.s.begin() + used, 0.0);
      std::fill(b.h.begin(), b.h.begin() + used, uint8_t(0));
      double* s = b.s.data();
      uint8_t* h = b.h.data();
      switch (agg_) {
        case Aggregate::Sum:
        case Aggregate::Average:
          if (use_fast<In>(fast_)) {
            for (int64_t r = 0; r < r1 - r0; ++r)
              for (int32_t c : fast_.targets_always) h[r * static_cast<int64_t>(K) + c] = 1;
          }
          sum_weights(e_, fast_, nodes, x, v.cols, r0, r1, K, s, h);
          break;
        case Aggregate::Min:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            double* sr = s + r * K;
            uint8_t* hr = h + r * K;
            for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
              const int32_t t = wid[k];
              if (!hr[t] || wv[k] < sr[t]) sr[t] = wv[k];
              hr[t] = 1;
            }
          });
          break;
        case Aggregate::Max:
          visit_leaves(e_, fast_, nodes, x, v.cols, r0, r1, [&](int64_t r, int32_t leaf) {
            double* sr = s + r * K;
            uint8_t* hr = h + r * K;
            for (int32_t k = first[leaf], end = k + cnt[leaf]; k < end; ++k) {
              const int32_t t = wid[k];
              if (!hr[t] || wv[k] > sr[t]) sr[t] = wv[k];
              hr[t] = 1;
            }
          });
          break;
      }
      for (int64_t r = r0; r < r1; ++r) {
        const double* sr = s + (r - r0) * K;
        const uint8_t* hr = h + (r - r0) * K;
        for (size_t k = 0; k < K; ++k) {
          double val = sr[k];
          switch (agg_) {
            case Aggregate::Sum:
              if (use_base) val += base_[k];
              break;
            case Aggregate::Average:
              val = use_base ? val / n_trees + base_[k] : val / n_trees;
              break;
            default:
              val = (use_base ? base_[k] : 0.0) + (hr[k] ? val : 0.0);
              break;
          }
          eff[k] = hr[k] ? val : 0.0;  // a target no leaf wrote to reads as 0 (ORT)
        }
        write_multi(eff.data(), K, transform_, z + r * static_cast<int64_t>(K));
      }
    }
  }

  std::string where_;
  int64_t n_targets_ = 1;
  Transform transform_ = Transform::None;
  Aggregate agg_ = Aggregate::Sum;
  std::vector<double> base_;
  Ensemble e_;
  DoubleNodes nodes_d_;
  Fast fast_;
};

// ----------------------------------------------------------------------------------------------
// Classifier

class TreeClassifier final : public Kernel {
 public:
  explicit TreeClassifier(const KernelContext& ctx) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = compile_ensemble(ctx.attrs, "class", n_classes_);
    finish();
  }
  TreeClassifier(const KernelContext& ctx, Ensemble&& e) : where_(ctx.attrs.where()) {
    read_attrs(ctx.attrs);
    e_ = std::move(e);
    check_ensemble(e_, where_, "class", n_classes_);
    finish();
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const InputView v = check_input(in, e_, where_);
    if (out.size() < 2) out.resize(2);
    Tensor& y = out[0];
    Tensor& z = out[1];
    y = Tensor(strings_ ? ElemType::String : ElemType::Int64, {v.rows});
    z = Tensor(ElemType::Float, {v.rows, n_classes_});
    if (v.rows == 0) return;
    std::vector<int64_t> lab(strings_ ? static_cast<size_t>(v.rows) : 0);
    int64_t* label = strings_ ? lab.data() : y.i.data();
    with_input(*in[0], e_, nodes_d_, [&](const auto& nodes, const auto* x) { run_typed(nodes, x, v, z.f.data(), label); });
    if (strings_) {
      for (int64_t r = 0; r < v.rows; ++r) y.s[static_cast<size_t>(r)] = str_labels_[static_cast<size_t>(lab[r])];
    }
  }

  size_t memory_bytes() const override { return ensemble_bytes(e_, fast_, nodes_d_); }

 private:
  void read_attrs(const Attrs& a) {
    int_labels_ = a.get_ints("classlabels_int64s");
    str_labels_ = a.get_strings("classlabels_strings");
    if (!int_labels_.empty() && !str_labels_.empty())
      fail(ErrorCode::InvalidModel,
           fmt::format("{} has both classlabels_int64s and classlabels_strings; give only one", where_));
    strings_ = !str_labels_.empty();
    n_classes_ = static_cast<int64_t>(strings_ ? str_labels_.size() : int_labels_.size());
    if (n_classes_ == 0)
      fail(ErrorCode::InvalidModel,
           fmt::format("{} lacks class labels (classlabels_int64s or classlabels_strings)", where_));
    if (n_classes_ < 2)
      fail(ErrorCode::InvalidModel, fmt::format("{} has a single class label; a classifier needs at least two",
                                                where_));
    if (strings_) {
      labels_.resize(static_cast<size_t>(n_classes_));
      std::iota(labels_.begin(), labels_.end(), int64_t(0));
    } else {
      labels_ = int_labels_;
    }
    transform_ = parse_transform(a);
    base_ = numeric_attr(a, "base_values");
    if (static_cast<int64_t>(base_.size()) > n_classes_)
      fail(ErrorCode::InvalidModel, fmt::format("{}: base_values has {} values for {} classes", where_,
                                                base_.size(), n_classes_));
  }

  void finish() {
    binary_case_ = n_classes_ == 2 && e_.distinct_ids == 1;
    fast_ = build_fast_weighted(e_);
  }

  template <typename T, typename In>
  void run_typed(const std::vector<Node<T>>& nodes, const In* x, const InputView& v, float* z, int64_t* label) const {
    const size_t K = static_cast<size_t>(n_classes_);
    Block b;
    b.s.resize(static_cast<size_t>(std::min(v.rows, kBlockRows)) * K);
    b.h.resize(b.s.size());
    std::vector<double> eff(K);
    for (int64_t r0 = 0; r0 < v.rows; r0 += kBlockRows) {
      poll_interrupt();  // every block: a fraction of a millisecond for hundreds of trees
      const int64_t r1 = std::min(v.rows, r0 + kBlockRows);
      const size_t used = static_cast<size_t>(r1 - r0) * K;
      std::fill(b.s.begin(), b.s.begin() + used, 0.0);
      std::fill(b.h.begin(), b.h.begin() + used, uint8_t(0));
      double* s = b.s.data();
      uint8_t* h = b.h.data();
      if (use_fast<In>(fast_)) {
        for (int64_t r = 0; r < r1 - r0; ++r)
          for (int32_t c : fast_.targets_always) h[r * static_cast<int64_t>(K) + c] = 1;
      }
      sum_weights(e_, fast_, nodes, x, v.cols, r0, r1, K, s, h);
      for (int64_t r = r0; r < r1; ++r) {
        double* sr = s + (r - r0) * K;
        uint8_t* hr = h + (r - r0) * K;
        float* zr = z + r * static_cast<int64_t>(K);
        if (K > 2) label[r] = finalize_multi(sr, hr, eff.data(), zr);
        else label[r] = finalize_binary(sr, hr, zr);
      }
    }
  }

  // ORT TreeAggregatorClassifier::FinalizeScores, more than two classes.
  int64_t finalize_multi(double* s, uint8_t* h, double* eff, float* z) const {
    const size_t K = static_cast<size_t>(n_classes_);
    for (size_t k = 0; k < base_.size(); ++k) {
      if (!h[k]) {
        h[k] = 1;
        s[k] = base_[k];
      } else {
        s[k] += base_[k];
      }
    }
    int64_t best = -1;
    double best_w = 0;
    for (size_t k = 0; k < K; ++k) {
      if (h[k] && (best == -1 || s[k] > best_w)) {
        best = static_cast<int64_t>(k);
        best_w = s[k];
      }
      eff[k] = h[k] ? s[k] : 0.0;
    }
    write_multi(eff, K, transform_, z);
    return labels_[static_cast<size_t>(best < 0 ? 0 : best)];
  }

  // ORT TreeAggregatorClassifier::FinalizeScores, two classes.
  int64_t finalize_binary(double* s, uint8_t* h, float* z) const {
    int second = -1;
    size_t size = 2;
    if (base_.size() == 2) {
      if (h[1]) {
        // ORT: base_values[0] is not used; class 0 carries the score, class 1 its opposite.
        s[1] = base_[1] + s[0];
        s[0] = -s[1];
      } else {
        s[1] += base_[1];
        s[0] += base_[0];
      }
    } else if (base_.size() == 1) {
      s[0] += base_[0];
      if (!h[1]) size = 1;
    } else {
      second = 3;
      if (!h[1]) size = 1;
    }
    const double pos = (size == 2 && h[1]) ? s[1] : (h[0] ? s[0] : 0.0);
    int64_t label;
    if (binary_case_) {
      if (e_.weights_all_positive) {
        second = pos > 0.5 ? 0 : 1;
        label = labels_[pos > 0.5 ? 1 : 0];
      } else {
        second = pos > 0 ? 2 : 3;
        label = labels_[pos > 0 ? 1 : 0];
      }
    } else {
      // Both classes carry weights. ORT returns the literal 0/1 here (label 1 whenever class 1 scores
      // above 0, whatever class 0 scores); we take the argmax, which agrees with the probabilities
      // and maps to the model's class labels. No converter we know emits this form.
      const double s0 = h[0] ? s[0] : 0.0;
      const double s1 = (size == 2 && h[1]) ? s[1] : 0.0;
      label = labels_[s1 > s0 ? 1 : 0];
    }
    if (size == 2) {
      const double eff[2] = {h[0] ? s[0] : 0.0, h[1] ? s[1] : 0.0};
      write_multi(eff, 2, transform_, z);
    } else {
      write_single(h[0] ? s[0] : 0.0, transform_, second, z);
    }
    return label;
  }

  std::string where_;
  std::vector<int64_t> int_labels_;
  std::vector<std::string> str_labels_;
  bool strings_ = false;
  std::vector<int64_t> labels_;  // int labels, or indices into str_labels_
  int64_t n_classes_ = 0;
  Transform transform_ = Transform::None;
  std::vector<double> base_;
  Ensemble e_;
  DoubleNodes nodes_d_;
  Fast fast_;
  bool binary_case_ = false;
};

}  // namespace

std::unique_ptr<Kernel> tree::make_tree_kernel(const KernelContext& ctx, Ensemble&& ensemble) {
  const std::string& op = ctx.node.op_type();
  if (op == "TreeEnsembleRegressor") return std::make_unique<TreeRegressor>(ctx, std::move(ensemble));
  if (op == "TreeEnsembleClassifier") return std::make_unique<TreeClassifier>(ctx, std::move(ensemble));
  fail(ErrorCode::Internal, fmt::format("{} is not a tree ensemble", ctx.attrs.where()));
}

bool tree::simd_walk_available() { return cpu_has_avx512f(); }

bool tree::set_simd_walk(bool on) {
  simd_walk_on.store(on && cpu_has_avx512f());
  return simd_walk_on.load();
}

void register_ml_tree_kernels(KernelRegistry& r) {
  r.add("ai.onnx.ml", "TreeEnsembleRegressor",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<TreeRegressor>(ctx); });
  r.add("ai.onnx.ml", "TreeEnsembleClassifier",
        [](const KernelContext& ctx) -> std::unique_ptr<Kernel> { return std::make_unique<TreeClassifier>(ctx); });
}

}  // namespace flock
