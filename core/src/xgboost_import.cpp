// XGBoost JSON (gbtree) -> ONNX-ML TreeEnsemble model. Only import_xgboost_json lives here.
//
// Encoding (checked against ONNX Runtime's TreeEnsemble semantics, which Flock's kernels follow):
//   reg:squarederror  TreeEnsembleRegressor(NONE, base_values=[base_score]) -> "variable"
//   reg:logistic      TreeEnsembleRegressor(NONE, base_values=[logit(base_score)]) -> Sigmoid ->
//                     "variable". (ORT ignores post_transform LOGISTIC on a single-target
//                     regressor, so the sigmoid is a separate standard node.)
//   binary:logistic   TreeEnsembleClassifier(LOGISTIC), labels [0, 1], every leaf weight on class 0
//                     and base_values=[logit(base_score)]: ORT's binary single-score case, which
//                     gives probabilities [1 - p, p] and label 1 iff the margin is > 0.
//                     If no leaf weight is negative, ORT's single-score case would skip the
//                     sigmoid ("all weights positive" rule); then class 1 also gets a 0 weight on
//                     every leaf of the first tree and base_values=[m, m], which ORT turns into
//                     scores [-margin, margin] -> the same [1 - p, p] and label.
//   multi:softprob / multi:softmax with num_class >= 3
//                     TreeEnsembleClassifier(SOFTMAX), class_ids = tree_info,
//                     base_values = [base_score] * num_class.
//   multi:* with num_class == 2
//                     the binary encoding on margin1 - margin0 (class-0 trees negated), since
//                     softmax of two margins is the logistic of their difference and ORT's
//                     two-class rules would otherwise drop the class-1 sum.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flock/error.hpp"
#include "flock/importers.hpp"

namespace flock {
namespace {

using json = nlohmann::json;

const char* kSupportedHint =
    "Flock imports XGBoost gbtree models with objective reg:squarederror, reg:logistic, "
    "binary:logistic, multi:softprob or multi:softmax (numerical splits only).";

[[noreturn]] void bad(const std::string& msg) { fail(ErrorCode::InvalidModel, "xgboost model: " + msg); }

[[noreturn]] void unsupported(const std::string& msg) {
  fail(ErrorCode::UnsupportedOperator, "xgboost model: " + msg, kSupportedHint);
}

const json& key(const json& j, const char* name, const std::string& path) {
  if (!j.is_object()) bad(fmt::format("'{}' is not a JSON object", path));
  auto it = j.find(name);
  if (it == j.end()) bad(fmt::format("missing key '{}{}{}'", path, path.empty() ? "" : ".", name));
  return *it;
}

const json* opt_key(const json& j, const char* name) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(name);
  return it == j.end() ? nullptr : &*it;
}

std::string join(const std::string& path, const char* name) { return path.empty() ? name : path + "." + name; }

// XGBoost writes most scalars as strings ("5E-1", "4").
double number(const json& v, const std::string& path) {
  if (v.is_number()) return v.get<double>();
  if (v.is_boolean()) return v.get<bool>() ? 1.0 : 0.0;
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    // XGBoost >= 2.1 may write a vector "[5E-1]" for base_score.
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
    const auto comma = s.find(',');
    if (comma != std::string::npos) s = s.substr(0, comma);
    try {
      size_t used = 0;
      double d = std::stod(s, &used);
      while (used < s.size() && (s[used] == ' ' || s[used] == '\t')) ++used;
      if (used == s.size()) return d;
    } catch (const std::exception&) {
    }
    bad(fmt::format("'{}' is \"{}\", not a number", path, v.get<std::string>()));
  }
  bad(fmt::format("'{}' is not a number", path));
}

int64_t integer(const json& v, const std::string& path) {
  double d = number(v, path);
  if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 9.0e15)
    bad(fmt::format("'{}' is {}, not an integer", path, d));
  return static_cast<int64_t>(d);
}

const json& array(const json& j, const char* name, const std::string& path) {
  const json& a = key(j, name, path);
  if (!a.is_array()) bad(fmt::format("'{}' is not an array", join(path, name)));
  return a;
}

std::vector<int64_t> ints(const json& j, const char* name, const std::string& path) {
  const json& a = array(j, name, path);
  std::vector<int64_t> out;
  out.reserve(a.size());
  const std::string p = join(path, name);
  for (size_t k = 0; k < a.size(); ++k) out.push_back(integer(a[k], fmt::format("{}[{}]", p, k)));
  return out;
}

std::vector<double> doubles(const json& j, const char* name, const std::string& path) {
  const json& a = array(j, name, path);
  std::vector<double> out;
  out.reserve(a.size());
  const std::string p = join(path, name);
  for (size_t k = 0; k < a.size(); ++k) out.push_back(number(a[k], fmt::format("{}[{}]", p, k)));
  return out;
}

std::string string_of(const json& v, const std::string& path) {
  if (!v.is_string()) bad(fmt::format("'{}' is not a string", path));
  return v.get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// ONNX building helpers

void attr_ints(onnx::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void attr_floats(onnx::NodeProto* n, const char* name, const std::vector<float>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float x : v) a->add_floats(x);
}

void attr_strings(onnx::NodeProto* n, const char* name, const std::vector<std::string>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRINGS);
  for (const auto& x : v) a->add_strings(x);
}

void attr_int(onnx::NodeProto* n, const char* name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void attr_string(onnx::NodeProto* n, const char* name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

// dims: -1 stands for the batch dimension "N".
void value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem, const std::vector<int64_t>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) dim->set_dim_param("N");
    else dim->set_dim_value(d);
  }
}

// ---------------------------------------------------------------------------------------------
// Trees

struct Nodes {
  std::vector<int64_t> treeids, nodeids, featureids, trueids, falseids, missing;
  std::vector<std::string> modes;
  std::vector<float> values;
  // Leaves, in emission order.
  std::vector<int64_t> leaf_tree, leaf_node;
  std::vector<float> leaf_value;
  std::vector<int64_t> leaf_tree_index;  // index of the XGBoost tree the leaf belongs to
};

// Appends tree `t` (XGBoost JSON object) as ONNX tree id `t`, nodes numbered in pre-order.
void add_tree(const json& tree, int64_t t, int64_t num_feature, const std::string& path, Nodes& out) {
  const auto left = ints(tree, "left_children", path);
  const auto right = ints(tree, "right_children", path);
  const auto split_index = ints(tree, "split_indices", path);
  const auto split_cond = doubles(tree, "split_conditions", path);
  const auto default_left = ints(tree, "default_left", path);
  const size_t n = left.size();
  if (n == 0) bad(fmt::format("'{}.left_children' is empty", path));
  auto same = [&](const char* name, size_t len) {
    if (len != n)
      bad(fmt::format("'{}.{}' has {} entries but '{}.left_children' has {}", path, name, len, path, n));
  };
  same("right_children", right.size());
  same("split_indices", split_index.size());
  same("split_conditions", split_cond.size());
  same("default_left", default_left.size());
  if (const json* st = opt_key(tree, "split_type"); st && st->is_array()) {
    for (size_t k = 0; k < st->size(); ++k) {
      if (integer((*st)[k], fmt::format("{}.split_type[{}]", path, k)) != 0)
        unsupported(fmt::format("tree {} has a categorical split (node {}); categorical features are not supported",
                                t, k));
    }
  }
  if (const json* tp = opt_key(tree, "tree_param")) {
    if (const json* slv = opt_key(*tp, "size_leaf_vector")) {
      if (integer(*slv, path + ".tree_param.size_leaf_vector") > 1)
        unsupported(fmt::format("tree {} has vector leaves (multi-target trees)", t));
    }
  }

  // Pre-order walk from node 0; each node must be reached exactly once.
  std::vector<int64_t> new_id(n, -1);
  std::vector<int64_t> order;
  std::vector<int64_t> stack{0};
  while (!stack.empty()) {
    int64_t v = stack.back();
    stack.pop_back();
    if (new_id[v] >= 0)
      bad(fmt::format("tree {} reaches node {} twice (the children arrays do not form a tree)", t, v));
    new_id[v] = static_cast<int64_t>(order.size());
    order.push_back(v);
    const int64_t l = left[v], r = right[v];
    if (l == -1 && r == -1) continue;
    if (l < 0 || r < 0 || l >= static_cast<int64_t>(n) || r >= static_cast<int64_t>(n))
      bad(fmt::format("tree {} node {} has children {} and {}, outside [0, {})", t, v, l, r, n));
    stack.push_back(r);
    stack.push_back(l);
  }

  for (int64_t v : order) {
    out.treeids.push_back(t);
    out.nodeids.push_back(new_id[v]);
    if (left[v] == -1) {
      out.featureids.push_back(0);
      out.modes.emplace_back("LEAF");
      out.values.push_back(0.0f);
      out.trueids.push_back(0);
      out.falseids.push_back(0);
      out.missing.push_back(0);
      out.leaf_tree.push_back(t);
      out.leaf_node.push_back(new_id[v]);
      out.leaf_value.push_back(static_cast<float>(split_cond[v]));
      out.leaf_tree_index.push_back(t);
    } else {
      if (split_index[v] < 0 || split_index[v] >= num_feature)
        bad(fmt::format("tree {} node {} splits on feature {}, but the model has {} features", t, v,
                        split_index[v], num_feature));
      out.featureids.push_back(split_index[v]);
      out.modes.emplace_back("BRANCH_LT");  // XGBoost: x < split_condition goes left
      out.values.push_back(static_cast<float>(split_cond[v]));
      out.trueids.push_back(new_id[left[v]]);
      out.falseids.push_back(new_id[right[v]]);
      out.missing.push_back(default_left[v] != 0 ? 1 : 0);
    }
  }
}

void add_node_attrs(onnx::NodeProto* node, const Nodes& nd) {
  attr_ints(node, "nodes_treeids", nd.treeids);
  attr_ints(node, "nodes_nodeids", nd.nodeids);
  attr_ints(node, "nodes_featureids", nd.featureids);
  attr_strings(node, "nodes_modes", nd.modes);
  attr_floats(node, "nodes_values", nd.values);
  attr_ints(node, "nodes_truenodeids", nd.trueids);
  attr_ints(node, "nodes_falsenodeids", nd.falseids);
  attr_ints(node, "nodes_missing_value_tracks_true", nd.missing);
}

// Margin of a probability, computed in float like XGBoost's ProbToMargin.
float logit(double base_score) {
  if (!(base_score > 0.0 && base_score < 1.0))
    bad(fmt::format("'learner.learner_model_param.base_score' is {}; a logistic objective needs it in (0, 1)",
                    base_score));
  const float p = static_cast<float>(base_score);
  return -std::log(1.0f / p - 1.0f);
}

}  // namespace

onnx::ModelProto import_xgboost_json(std::span<const uint8_t> bytes) {
  json root;
  try {
    root = json::parse(bytes.begin(), bytes.end());
  } catch (const json::parse_error& e) {
    bad(fmt::format("not valid JSON: {}", e.what()));
  }

  const json& learner = key(root, "learner", "");
  const json& booster = key(learner, "gradient_booster", "learner");
  const std::string booster_name = string_of(key(booster, "name", "learner.gradient_booster"),
                                             "learner.gradient_booster.name");
  if (booster_name != "gbtree")
    unsupported(fmt::format("booster '{}' is not supported (only 'gbtree')", booster_name));

  const json& objective_j = key(learner, "objective", "learner");
  const std::string objective = string_of(key(objective_j, "name", "learner.objective"), "learner.objective.name");
  const bool is_reg_sq = objective == "reg:squarederror";
  const bool is_reg_log = objective == "reg:logistic";
  const bool is_binary = objective == "binary:logistic";
  const bool is_multi = objective == "multi:softprob" || objective == "multi:softmax";
  if (!is_reg_sq && !is_reg_log && !is_binary && !is_multi)
    unsupported(fmt::format("objective '{}' is not supported", objective));

  const std::string mp_path = "learner.learner_model_param";
  const json& mp = key(learner, "learner_model_param", "learner");
  const double base_score = number(key(mp, "base_score", mp_path), mp_path + ".base_score");
  const int64_t num_feature = integer(key(mp, "num_feature", mp_path), mp_path + ".num_feature");
  const int64_t num_class = integer(key(mp, "num_class", mp_path), mp_path + ".num_class");
  if (num_feature < 1) bad(fmt::format("'{}.num_feature' is {}; it must be positive", mp_path, num_feature));
  if (const json* nt = opt_key(mp, "num_target")) {
    const int64_t num_target = integer(*nt, mp_path + ".num_target");
    if (num_target > 1) unsupported(fmt::format("num_target is {} (multi-output models are not supported)", num_target));
  }
  if (!std::isfinite(base_score)) bad(fmt::format("'{}.base_score' is not finite", mp_path));
  if (is_multi && num_class < 2)
    bad(fmt::format("objective '{}' needs '{}.num_class' >= 2, got {}", objective, mp_path, num_class));
  if (!is_multi && num_class > 1)
    bad(fmt::format("objective '{}' does not take '{}.num_class' = {}", objective, mp_path, num_class));

  const std::string model_path = "learner.gradient_booster.model";
  const json& model = key(booster, "model", "learner.gradient_booster");
  const json& trees = array(model, "trees", model_path);
  const auto tree_info = ints(model, "tree_info", model_path);
  if (trees.empty()) bad(fmt::format("'{}.trees' is empty; the model has no trees", model_path));
  if (tree_info.size() != trees.size())
    bad(fmt::format("'{}.tree_info' has {} entries for {} trees", model_path, tree_info.size(), trees.size()));
  const int64_t n_groups = is_multi ? num_class : 1;
  for (size_t t = 0; t < tree_info.size(); ++t) {
    if (tree_info[t] < 0 || tree_info[t] >= n_groups)
      bad(fmt::format("'{}.tree_info[{}]' is {}, outside [0, {})", model_path, t, tree_info[t], n_groups));
  }

  Nodes nd;
  for (size_t t = 0; t < trees.size(); ++t) {
    add_tree(trees[t], static_cast<int64_t>(t), num_feature, fmt::format("{}.trees[{}]", model_path, t), nd);
  }

  std::vector<std::string> feature_names;
  if (const json* fn = opt_key(learner, "feature_names"); fn && !fn->is_null()) {
    if (!fn->is_array()) bad("'learner.feature_names' is not an array");
    for (size_t k = 0; k < fn->size(); ++k)
      feature_names.push_back(string_of((*fn)[k], fmt::format("learner.feature_names[{}]", k)));
    if (!feature_names.empty() && static_cast<int64_t>(feature_names.size()) != num_feature)
      bad(fmt::format("'learner.feature_names' has {} names but the model has {} features", feature_names.size(),
                      num_feature));
  }

  // ---- ONNX model
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("xgboost");
  if (const json* ver = opt_key(root, "version"); ver && ver->is_array()) {
    std::string v;
    for (size_t k = 0; k < ver->size(); ++k) {
      if (!(*ver)[k].is_number_integer()) break;
      v += (k ? "." : "") + std::to_string((*ver)[k].get<int64_t>());
    }
    m.set_producer_version(v);
  }
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(15);
  opset = m.add_opset_import();
  opset->set_domain("ai.onnx.ml");
  opset->set_version(3);
  if (!feature_names.empty()) {
    auto* prop = m.add_metadata_props();
    prop->set_key("feature_names");
    prop->set_value(json(feature_names).dump());
  }

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("xgboost");
  value_info(g->add_input(), "input", onnx::TensorProto::FLOAT, {-1, num_feature});

  onnx::NodeProto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  const size_t n_leaves = nd.leaf_value.size();

  if (is_reg_sq || is_reg_log) {
    node->set_op_type("TreeEnsembleRegressor");
    node->set_name("xgboost_trees");
    node->add_output(is_reg_log ? "margin" : "variable");
    add_node_attrs(node, nd);
    attr_ints(node, "target_ids", std::vector<int64_t>(n_leaves, 0));
    attr_ints(node, "target_nodeids", nd.leaf_node);
    attr_ints(node, "target_treeids", nd.leaf_tree);
    attr_floats(node, "target_weights", nd.leaf_value);
    attr_int(node, "n_targets", 1);
    attr_string(node, "aggregate_function", "SUM");
    attr_string(node, "post_transform", "NONE");
    attr_floats(node, "base_values", {is_reg_log ? logit(base_score) : static_cast<float>(base_score)});
    if (is_reg_log) {
      onnx::NodeProto* sig = g->add_node();
      sig->set_op_type("Sigmoid");
      sig->set_name("xgboost_sigmoid");
      sig->add_input("margin");
      sig->add_output("variable");
      // ONNX has no type inference for TreeEnsembleRegressor: declare the intermediate.
      value_info(g->add_value_info(), "margin", onnx::TensorProto::FLOAT, {-1, 1});
    }
    value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {-1, 1});
    return m;
  }

  node->set_op_type("TreeEnsembleClassifier");
  node->set_name("xgboost_trees");
  node->add_output("label");
  node->add_output("probabilities");
  add_node_attrs(node, nd);
  const int64_t n_classes = is_multi ? num_class : 2;
  std::vector<int64_t> labels(static_cast<size_t>(n_classes));
  for (int64_t k = 0; k < n_classes; ++k) labels[static_cast<size_t>(k)] = k;

  std::vector<int64_t> class_ids, class_nodes, class_trees;
  std::vector<float> class_weights;
  class_ids.reserve(n_leaves);
  if (n_classes == 2) {
    // One score: binary margin, or margin(class 1) - margin(class 0) for two-class softmax.
    float base = is_binary ? logit(base_score) : 0.0f;
    bool all_positive = true;
    for (size_t k = 0; k < n_leaves; ++k) {
      float w = nd.leaf_value[k];
      if (is_multi && tree_info[static_cast<size_t>(nd.leaf_tree_index[k])] == 0) w = -w;
      class_ids.push_back(0);
      class_nodes.push_back(nd.leaf_node[k]);
      class_trees.push_back(nd.leaf_tree[k]);
      class_weights.push_back(w);
      if (w < 0) all_positive = false;
    }
    if (all_positive) {
      for (size_t k = 0; k < n_leaves && nd.leaf_tree[k] == 0; ++k) {
        class_ids.push_back(1);
        class_nodes.push_back(nd.leaf_node[k]);
        class_trees.push_back(0);
        class_weights.push_back(0.0f);
      }
      attr_floats(node, "base_values", {base, base});
    } else {
      attr_floats(node, "base_values", {base});
    }
    attr_string(node, "post_transform", "LOGISTIC");
  } else {
    for (size_t k = 0; k < n_leaves; ++k) {
      class_ids.push_back(tree_info[static_cast<size_t>(nd.leaf_tree_index[k])]);
      class_nodes.push_back(nd.leaf_node[k]);
      class_trees.push_back(nd.leaf_tree[k]);
      class_weights.push_back(nd.leaf_value[k]);
    }
    attr_floats(node, "base_values", std::vector<float>(static_cast<size_t>(n_classes), static_cast<float>(base_score)));
    attr_string(node, "post_transform", "SOFTMAX");
  }
  attr_ints(node, "class_ids", class_ids);
  attr_ints(node, "class_nodeids", class_nodes);
  attr_ints(node, "class_treeids", class_trees);
  attr_floats(node, "class_weights", class_weights);
  attr_ints(node, "classlabels_int64s", labels);

  value_info(g->add_output(), "label", onnx::TensorProto::INT64, {-1});
  value_info(g->add_output(), "probabilities", onnx::TensorProto::FLOAT, {-1, n_classes});
  return m;
}

}  // namespace flock
