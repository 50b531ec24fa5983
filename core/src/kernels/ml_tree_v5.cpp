// ai.onnx.ml 5 TreeEnsemble, lowered onto the TreeEnsembleRegressor kernel.
//
// TreeEnsemble keeps nodes and leaves apart (nodes_* / leaf_*), its splits and weights in tensors
// of the input's type, its enums as integers, and adds BRANCH_MEMBER: the true branch when the
// feature is one of a set of values. Each tree (from a tree_roots entry) becomes a tree of a
// TreeEnsembleRegressor node with one weight per leaf, so the regressor's compile step validates
// and lays it out, and its walk, aggregation (SUM, AVERAGE, MIN, MAX) and post transforms run it
// with ONNX Runtime's semantics (ORT lowers TreeEnsemble onto the same code).
//
// A set membership x in {v1..vk} becomes a chain of BRANCH_NEQ nodes: x != v1 goes on to
// x != v2, ..., the last one to the false branch; each equality leaves the chain for the true
// branch. NaN is unequal to everything and so reaches the false branch; when the node sends
// missing values to the true branch, a guard x <= +inf (false only for NaN) first sends NaN there.
// An empty set is one node, x <= +inf, its sides swapped.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "flock/checked.hpp"
#include "flock/interrupt.hpp"
#include "ml_tree.hpp"

namespace flock::tree {

namespace {

const onnx::AttributeProto* find(const Attrs& a, const char* name) {
  for (const auto& at : a.node().attribute())
    if (at.name() == name) return &at;
  return nullptr;
}

std::vector<int64_t> ints(const Attrs& a, const char* name, bool required) {
  const onnx::AttributeProto* at = find(a, name);
  if (!at) {
    if (required) fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute '{}'", a.where(), name));
    return {};
  }
  return {at->ints().begin(), at->ints().end()};
}

// A 1-D float or double tensor attribute as doubles (empty if absent and optional).
std::vector<double> numbers(const Attrs& a, const char* name, bool required, ElemType* type = nullptr) {
  if (!a.has(name)) {
    if (required) fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute '{}'", a.where(), name));
    return {};
  }
  Tensor t = a.get_tensor(name);
  if (t.shape.size() != 1)
    fail(ErrorCode::InvalidModel, fmt::format("{}: attribute '{}' must be a 1-D tensor", a.where(), name));
  if (t.type != ElemType::Float && t.type != ElemType::Double)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{}: attribute '{}' has element type {}; Flock runs float and double TreeEnsembles", a.where(),
                     name, to_string(t.type)));
  if (type) *type = t.type;
  std::vector<double> out(t.size());
  for (size_t k = 0; k < out.size(); ++k) out[k] = t.as_double(k);
  return out;
}

const char* const kModes[] = {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"};
constexpr int64_t kMember = 6;

// The lowered node's attributes, built entry by entry.
struct Lowered {
  std::vector<int64_t> tree, id, feature, yes, no, missing;
  std::vector<std::string> mode;
  std::vector<double> value;
  std::vector<int64_t> w_tree, w_node, w_id;
  std::vector<double> w_value;

  // Appends a node of tree `t` with the next id (its position in the tree).
  int64_t add(int64_t t, int64_t node_id, const char* m, int64_t f, double v, int64_t missing_true) {
    tree.push_back(t);
    id.push_back(node_id);
    mode.emplace_back(m);
    feature.push_back(f);
    value.push_back(v);
    yes.push_back(0);
    no.push_back(0);
    missing.push_back(missing_true);
    return static_cast<int64_t>(tree.size()) - 1;
  }
};

void set_ints(onnx::NodeProto& node, const char* name, const std::vector<int64_t>& v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  a->mutable_ints()->Add(v.begin(), v.end());
}

void set_doubles(onnx::NodeProto& node, const char* name, const std::vector<double>& v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::TENSOR);
  auto* t = a->mutable_t();
  t->set_data_type(onnx::TensorProto::DOUBLE);
  t->add_dims(static_cast<int64_t>(v.size()));
  t->mutable_double_data()->Add(v.begin(), v.end());
}

void set_string(onnx::NodeProto& node, const char* name, const std::string& v) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

}  // namespace

std::unique_ptr<Kernel> make_tree_ensemble5(const KernelContext& ctx) {
  const Attrs& a = ctx.attrs;
  const std::string where = a.where();
  auto bad = [&](const std::string& what) { fail(ErrorCode::InvalidModel, fmt::format("{}: {}", where, what)); };

  // The splits, weights and set members have the input's element type (float or double).
  ElemType type = ElemType::Float, weights_type = ElemType::Float, members_type = ElemType::Float;
  const std::vector<double> splits = numbers(a, "nodes_splits", true, &type);
  const size_t n = splits.size();
  const std::vector<int64_t> featureids = ints(a, "nodes_featureids", true);
  const std::vector<int64_t> trueids = ints(a, "nodes_truenodeids", true);
  const std::vector<int64_t> falseids = ints(a, "nodes_falsenodeids", true);
  const std::vector<int64_t> trueleafs = ints(a, "nodes_trueleafs", true);
  const std::vector<int64_t> falseleafs = ints(a, "nodes_falseleafs", true);
  const std::vector<int64_t> missing = ints(a, "nodes_missing_value_tracks_true", false);
  const std::vector<int64_t> roots = ints(a, "tree_roots", true);
  const std::vector<int64_t> targetids = ints(a, "leaf_targetids", true);
  const std::vector<double> weights = numbers(a, "leaf_weights", true, &weights_type);
  const std::vector<double> members = numbers(a, "membership_values", false, &members_type);
  if (weights_type != type || (a.has("membership_values") && members_type != type))
    bad(fmt::format("nodes_splits, leaf_weights and membership_values must have one element type (nodes_splits "
                    "has {})",
                    to_string(type)));
  if (!a.has("nodes_modes")) bad("lacks required attribute 'nodes_modes'");
  const Tensor modes = a.get_tensor("nodes_modes");
  if (modes.type != ElemType::Int64 || modes.shape.size() != 1) bad("nodes_modes must be a 1-D uint8 tensor");

  auto check_len = [&](const char* name, size_t len) {
    if (len != n) bad(fmt::format("'{}' has {} values but nodes_splits has {}", name, len, n));
  };
  check_len("nodes_featureids", featureids.size());
  check_len("nodes_truenodeids", trueids.size());
  check_len("nodes_falsenodeids", falseids.size());
  check_len("nodes_trueleafs", trueleafs.size());
  check_len("nodes_falseleafs", falseleafs.size());
  check_len("nodes_modes", modes.i.size());
  if (!missing.empty()) check_len("nodes_missing_value_tracks_true", missing.size());
  const size_t n_leaves = weights.size();
  if (targetids.size() != n_leaves)
    bad(fmt::format("leaf_targetids has {} values but leaf_weights has {}", targetids.size(), n_leaves));
  if (roots.empty()) bad("tree_roots is empty");
  if (n == 0) bad("has no nodes (nodes_splits is empty)");

  // Per node: its set's first value in membership_values and its size (BRANCH_MEMBER nodes, in
  // the order of nodes_modes, each set ended by a NaN).
  std::vector<size_t> set_first(n, 0), set_size(n, 0);
  {
    size_t pos = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t m = modes.i[i];
      if (m < 0 || m > kMember) bad(fmt::format("nodes_modes[{}] is {}, not a mode (0-6)", i, m));
      if (m != kMember) continue;
      set_first[i] = pos;
      while (pos < members.size() && !std::isnan(members[pos])) ++pos;
      if (pos == members.size())
        bad(fmt::format("membership_values lacks the NaN-terminated set of BRANCH_MEMBER node {}", i));
      set_size[i] = pos - set_first[i];
      ++pos;  // the NaN
    }
    if (pos != members.size())
      bad("membership_values holds more sets than there are BRANCH_MEMBER nodes");
  }
  for (size_t i = 0; i < n; ++i) {
    if (featureids[i] < 0 || featureids[i] >= std::numeric_limits<int32_t>::max())
      bad(fmt::format("nodes_featureids[{}] is {}, out of range", i, featureids[i]));
    for (const auto& [leaf, child, side] : {std::tuple{trueleafs[i], trueids[i], "true"},
                                            std::tuple{falseleafs[i], falseids[i], "false"}}) {
      if (leaf != 0 && leaf != 1) bad(fmt::format("nodes_{}leafs[{}] is {}, not 0 or 1", side, i, leaf));
      const size_t limit = leaf ? n_leaves : n;
      if (child < 0 || static_cast<uint64_t>(child) >= limit)
        bad(fmt::format("node {}'s {} child is {} {}, outside [0, {})", i, side, leaf ? "leaf" : "node", child, limit));
    }
  }

  // Trees are emitted one by one; a node several trees reach is copied into each (within a
  // budget: a hostile model could share one large tree between many roots).
  const int64_t sizes = static_cast<int64_t>(n + n_leaves + members.size() + roots.size());
  const size_t budget = static_cast<size_t>(
      checked_add(checked_mul(sizes, 4, "TreeEnsemble size"), int64_t(1024), "TreeEnsemble size"));
  Lowered out;
  for (size_t t = 0; t < roots.size(); ++t) {
    poll_interrupt();
    const int64_t r = roots[t];
    if (r < 0 || static_cast<uint64_t>(r) >= n) bad(fmt::format("tree_roots[{}] is {}, outside [0, {})", t, r, n));
    const int64_t tree = static_cast<int64_t>(t);
    int64_t next_id = 0;
    // Ids in this tree of the nodes and leaves reached so far, by key 2 * index (+ 1 for a leaf):
    // a node two parents share keeps one id, so the regressor sees the same sharing (and finds
    // any cycle).
    std::unordered_map<int64_t, int64_t> made;
    std::vector<int64_t> work;  // keys with an id, in the order they got it; emitted from `head` on
    // Returns the id of `key` in this tree, queueing it when new.
    auto id_of = [&](int64_t key) -> int64_t {
      auto [it, inserted] = made.emplace(key, next_id);
      if (inserted) {
        ++next_id;
        work.push_back(key);
      }
      return it->second;
    };
    // A tree whose root sends both sides to one leaf is that leaf (the specification's degenerate
    // tree); its root's mode and feature are not read.
    const bool leaf_tree = trueleafs[r] && falseleafs[r] && trueids[r] == falseids[r];
    id_of(leaf_tree ? 2 * trueids[r] + 1 : 2 * r);
    // The root is the tree's first entry (the regressor's rule for roots); the order of the others
    // does not matter, their ids link them.
    size_t head = 0;
    while (head < work.size()) {
      if (out.tree.size() > budget)
        fail(ErrorCode::LimitExceeded,
             fmt::format("{}: its trees expand to more than {} nodes (nodes shared between trees)", where, budget));
      const int64_t key = work[head++];
      const int64_t index = key / 2;
      const int64_t own_id = made[key];
      if (key % 2 == 1) {  // leaf
        out.add(tree, own_id, "LEAF", 0, 0.0, 0);
        out.w_tree.push_back(tree);
        out.w_node.push_back(own_id);
        out.w_id.push_back(targetids[static_cast<size_t>(index)]);
        out.w_value.push_back(weights[static_cast<size_t>(index)]);
        continue;
      }
      const size_t i = static_cast<size_t>(index);
      const int64_t yes_id = id_of(2 * trueids[i] + (trueleafs[i] ? 1 : 0));
      const int64_t no_id = id_of(2 * falseids[i] + (falseleafs[i] ? 1 : 0));
      const int64_t mt = missing.empty() ? 0 : (missing[i] == 1 ? 1 : 0);
      if (modes.i[i] != kMember) {
        const int64_t e = out.add(tree, own_id, kModes[modes.i[i]], featureids[i], splits[i], mt);
        out.yes[static_cast<size_t>(e)] = yes_id;
        out.no[static_cast<size_t>(e)] = no_id;
        continue;
      }
      const double inf = std::numeric_limits<double>::infinity();
      const size_t k = set_size[i];
      if (k == 0) {  // x in {}: false, except NaN when missing values go to the true side
        const int64_t e = out.add(tree, own_id, "BRANCH_LEQ", featureids[i], inf, 1 - mt);
        out.yes[static_cast<size_t>(e)] = no_id;
        out.no[static_cast<size_t>(e)] = yes_id;
        continue;
      }
      // The chain's entries: own_id first, then fresh ids.
      int64_t current = own_id;
      if (mt) {
        const int64_t guard = out.add(tree, current, "BRANCH_LEQ", featureids[i], inf, 0);
        current = next_id++;
        out.yes[static_cast<size_t>(guard)] = current;
        out.no[static_cast<size_t>(guard)] = yes_id;
      }
      for (size_t j = 0; j < k; ++j) {
        const int64_t e = out.add(tree, current, "BRANCH_NEQ", featureids[i], members[set_first[i] + j], 0);
        const bool last = j + 1 == k;
        const int64_t following = last ? no_id : next_id++;
        out.yes[static_cast<size_t>(e)] = following;
        out.no[static_cast<size_t>(e)] = yes_id;
        current = following;
      }
    }
  }

  onnx::NodeProto node;
  node.set_op_type("TreeEnsembleRegressor");
  node.set_domain("ai.onnx.ml");
  node.set_name(ctx.node.name());
  set_ints(node, "nodes_treeids", out.tree);
  set_ints(node, "nodes_nodeids", out.id);
  set_ints(node, "nodes_featureids", out.feature);
  {
    auto* m = node.add_attribute();
    m->set_name("nodes_modes");
    m->set_type(onnx::AttributeProto::STRINGS);
    for (const auto& s : out.mode) m->add_strings(s);
  }
  set_doubles(node, "nodes_values_as_tensor", out.value);
  set_ints(node, "nodes_truenodeids", out.yes);
  set_ints(node, "nodes_falsenodeids", out.no);
  set_ints(node, "nodes_missing_value_tracks_true", out.missing);
  set_ints(node, "target_treeids", out.w_tree);
  set_ints(node, "target_nodeids", out.w_node);
  set_ints(node, "target_ids", out.w_id);
  set_doubles(node, "target_weights_as_tensor", out.w_value);
  if (!a.has("n_targets")) bad("lacks required attribute 'n_targets'");
  {
    auto* nt = node.add_attribute();
    nt->set_name("n_targets");
    nt->set_type(onnx::AttributeProto::INT);
    nt->set_i(a.get_int("n_targets"));
  }
  const int64_t transform = a.get_int("post_transform", 0);
  const char* const transforms[] = {"NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"};
  if (transform < 0 || transform > 4) bad(fmt::format("post_transform is {}, not 0-4", transform));
  set_string(node, "post_transform", transforms[transform]);
  const int64_t aggregate = a.get_int("aggregate_function", 1);
  const char* const aggregates[] = {"AVERAGE", "SUM", "MIN", "MAX"};
  if (aggregate < 0 || aggregate > 3) bad(fmt::format("aggregate_function is {}, not 0-3", aggregate));
  set_string(node, "aggregate_function", aggregates[aggregate]);

  Attrs lowered_attrs(node);
  KernelContext lowered{node, lowered_attrs, ctx.opset};
  try {
    return make_tree_ensemble5_kernel(lowered, type);
  } catch (const Error& e) {
    // The regressor names its own attributes; say which operator they came from.
    throw Error(e.code(), fmt::format("{} (lowered onto TreeEnsembleRegressor): {}", where, e.what()), e.hint());
  }
}

}  // namespace flock::tree
