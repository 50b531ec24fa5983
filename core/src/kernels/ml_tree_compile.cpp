// ai.onnx.ml TreeEnsemble attributes compiled into flat node arrays (Ensemble), and the checks
// every ensemble passes, also one the XGBoost importer builds itself. The semantics and the
// layout are described in ml_tree_kernels.cpp.
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

namespace flock::tree {
namespace {

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

// ----------------------------------------------------------------------------------------------
// Compiled ensemble

struct PairHash {
  size_t operator()(const std::pair<int64_t, int64_t>& p) const noexcept {
    uint64_t h = static_cast<uint64_t>(p.first) * 0x9E3779B97F4A7C15ULL;
    h ^= static_cast<uint64_t>(p.second) + 0x7F4A7C159E3779B9ULL + (h << 6) + (h >> 2);
    return static_cast<size_t>(h);
  }
};

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
      const uint64_t max_table = 4 * n + 64;  // slots; sparser ids keep the hash map
      offset_.assign(span + 2, 0);
      for (size_t t = 0; t <= span; ++t) {
        offset_[t] = total;
        if (lo_[t] <= hi[t]) total += static_cast<uint64_t>(hi[t]) - static_cast<uint64_t>(lo_[t]) + 1;
        if (total > max_table) break;
      }
      offset_[span + 1] = total;
      if (total <= max_table) {
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

}  // namespace

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
  e.source_ids.resize(order.size());
  bool first_branch = true;
  for (size_t j = 0; j < order.size(); ++j) {
    const int32_t i = order[j];
    e.source_ids[j] = nodeids[i];
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
  if (!e.cover.empty() && e.cover.size() != n) bad("node covers do not match the nodes");
  if (!e.gain.empty() && e.gain.size() != n) bad("node gains do not match the nodes");
  for (float c : e.cover)
    if (!(c >= 0) || !std::isfinite(c)) bad("a node cover is negative or not finite");
  for (size_t k = 0; k < e.roots.size(); ++k) {
    if (e.roots[k] < 0 || static_cast<size_t>(e.roots[k]) >= n || (k > 0 && e.roots[k] <= e.roots[k - 1]))
      bad(fmt::format("tree {} has root {}, out of order or outside [0, {})", k, e.roots[k], n));
  }
  if (!e.source_ids.empty() && e.source_ids.size() != n) bad("node ids do not match the nodes");
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
  // The callers bound n_outputs (n_targets, the importer's num_class); `seen` is indexed by ids below it.
  if (n_outputs > kMaxTreeOutputs)
    fail(ErrorCode::LimitExceeded,
         fmt::format("{} has {} outputs, more than Flock supports", where, n_outputs));
  std::vector<uint8_t> seen(static_cast<size_t>(std::max<int64_t>(n_outputs, 0)), 0);
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

}  // namespace flock::tree
