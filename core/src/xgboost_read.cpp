// XGBoost JSON (gbtree) -> the trees in the TreeEnsemble kernel's compiled form (XGBoostTrees);
// xgboost_import.cpp turns them into an ONNX-ML model.
//
// JSON: simdjson's On-Demand API (xgboost_json.hpp) rather than nlohmann::json, which needs ~1 s
// and ~1 GB of allocations for a 20 MB model. Every value of the document is validated, the
// per-node statistics the importer never reads too, and every number is parsed once.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xgboost_import.hpp"

#include "flock/error.hpp"
#include "xgboost_json.hpp"

namespace flock {
namespace {

const char* kSupportedHint =
    "Flock imports XGBoost gbtree models with objective reg:squarederror, reg:logistic, "
    "binary:logistic, multi:softprob or multi:softmax (numerical splits only).";

[[noreturn]] void bad(const std::string& msg) { fail(ErrorCode::InvalidModel, "xgboost model: " + msg); }

[[noreturn]] void unsupported(const std::string& msg) {
  fail(ErrorCode::UnsupportedOperator, "xgboost model: " + msg, kSupportedHint);
}

using xgboost_json::Document;
using JValue = xgboost_json::Value;

// ---------------------------------------------------------------------------------------------
// Typed access with paths in error messages

std::string join(const std::string& path, const char* name) { return path.empty() ? name : path + "." + name; }

const JValue& key(const Document& d, const JValue& j, const char* name, const std::string& path) {
  if (!j.is_object()) bad(fmt::format("'{}' is not a JSON object", path));
  const JValue* v = d.find(j, name);
  if (!v) bad(fmt::format("missing key '{}{}{}'", path, path.empty() ? "" : ".", name));
  return *v;
}

const JValue* opt_key(const Document& d, const JValue& j, const char* name) {
  if (!j.is_object()) return nullptr;
  return d.find(j, name);
}

// XGBoost writes most scalars as strings ("5E-1", "4").
double number(const JValue& v, const std::string& path) {
  if (v.is_number()) return v.number;
  if (v.is_bool()) return v.kind == JValue::True ? 1.0 : 0.0;
  if (v.is_string()) {
    std::string s(v.text);
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
    bad(fmt::format("'{}' is \"{}\", not a number", path, v.text));
  }
  bad(fmt::format("'{}' is not a number", path));
}

// Integers are exact in a double up to 2^53; the bound keeps every value well inside it.
constexpr double kMaxInteger = 9.0e15;

bool is_integer(double d) { return std::isfinite(d) && d == std::floor(d) && std::abs(d) <= kMaxInteger; }

int64_t check_integer(double d, const std::string& path) {
  if (!is_integer(d)) bad(fmt::format("'{}' is {}, not an integer", path, d));
  return static_cast<int64_t>(d);
}

int64_t integer(const JValue& v, const std::string& path) { return check_integer(number(v, path), path); }

const JValue& array(const Document& d, const JValue& j, const char* name, const std::string& path) {
  const JValue& a = key(d, j, name, path);
  if (!a.is_array()) bad(fmt::format("'{}' is not an array", join(path, name)));
  if (a.dropped) fail(ErrorCode::Internal, fmt::format("xgboost model: '{}' was read as unread", join(path, name)));
  return a;
}

void read_doubles(const Document& d, const JValue& j, const char* name, const std::string& path,
                  std::vector<double>& out) {
  const JValue& a = array(d, j, name, path);
  if (a.numeric) {
    const std::span<const double> values = d.numbers(a);
    out.assign(values.begin(), values.end());
    return;
  }
  out.resize(a.count);
  const std::string p = join(path, name);
  for (uint32_t k = 0; k < a.count; ++k) out[k] = number(d.at(a, k), fmt::format("{}[{}]", p, k));
}

// An array of numbers whose elements are all 0 (XGBoost's split_type of numerical splits).
bool all_zeros(const Document& d, const JValue& a) {
  if (!a.numeric) return false;
  for (double x : d.numbers(a))
    if (x != 0) return false;
  return true;
}

std::string string_of(const JValue& v, const std::string& path) {
  if (!v.is_string()) bad(fmt::format("'{}' is not a string", path));
  return std::string(v.text);
}

struct Scratch {
  // Arrays read element by element (not all numbers in the text): their values.
  std::vector<double> left, right, split_index, split_cond, default_left, hessian, loss;
  std::vector<int64_t> split_type;
  std::vector<int64_t> new_id, order, stack;
};

// The numbers of array `name`: the document's own run when every element is a number (no copy),
// else each element read with number() into `spill`.
std::span<const double> numbers_of(const Document& d, const JValue& j, const char* name, const std::string& path,
                                   std::vector<double>& spill) {
  const JValue& a = array(d, j, name, path);
  if (a.numeric) return d.numbers(a);
  read_doubles(d, j, name, path, spill);
  return spill;
}

// numbers_of for an array of integers: every element checked to be one.
std::span<const double> integers_of(const Document& d, const JValue& j, const char* name, const std::string& path,
                                    std::vector<double>& spill) {
  const std::span<const double> values = numbers_of(d, j, name, path, spill);
  for (size_t k = 0; k < values.size(); ++k)
    if (!is_integer(values[k])) check_integer(values[k], fmt::format("{}[{}]", join(path, name), k));
  return values;
}

void read_ints(const Document& d, const JValue& j, const char* name, const std::string& path, std::vector<int64_t>& out) {
  std::vector<double> spill;
  const std::span<const double> values = integers_of(d, j, name, path, spill);
  out.resize(values.size());
  for (size_t k = 0; k < values.size(); ++k) out[k] = static_cast<int64_t>(values[k]);
}

std::vector<int64_t> ints(const Document& d, const JValue& j, const char* name, const std::string& path) {
  std::vector<int64_t> out;
  read_ints(d, j, name, path, out);
  return out;
}

// Appends tree `t` (XGBoost JSON object) to the ensemble, nodes numbered in pre-order; each leaf
// gets one weight, for `leaf_id`, negated if `negate`.
void add_tree(const Document& d, const JValue& tree, int64_t t, int64_t num_feature, const std::string& path,
              int32_t leaf_id, bool negate, tree::Ensemble& e, Scratch& s) {
  const std::span<const double> left = integers_of(d, tree, "left_children", path, s.left);
  const std::span<const double> right = integers_of(d, tree, "right_children", path, s.right);
  const std::span<const double> split_index = integers_of(d, tree, "split_indices", path, s.split_index);
  const std::span<const double> split_cond = numbers_of(d, tree, "split_conditions", path, s.split_cond);
  const std::span<const double> default_left = integers_of(d, tree, "default_left", path, s.default_left);
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
  // The node covers, when every tree has them (older files may not): TreeSHAP's weights.
  std::span<const double> hessian;
  if (opt_key(d, tree, "sum_hessian")) {
    hessian = numbers_of(d, tree, "sum_hessian", path, s.hessian);
    same("sum_hessian", hessian.size());
  }
  bool covers = !hessian.empty() && (t == 0 || e.cover.size() == e.nodes_f.size());
  for (size_t k = 0; covers && k < hessian.size(); ++k)  // unusable covers are dropped, not an error
    covers = hessian[k] >= 0 && std::isfinite(static_cast<float>(hessian[k]));
  if (!covers) e.cover.clear();
  std::span<const double> loss;
  if (opt_key(d, tree, "loss_changes")) {
    loss = numbers_of(d, tree, "loss_changes", path, s.loss);
    same("loss_changes", loss.size());
  }
  bool gains = !loss.empty() && (t == 0 || e.gain.size() == e.nodes_f.size());
  for (size_t k = 0; gains && k < loss.size(); ++k) gains = std::isfinite(static_cast<float>(loss[k]));
  if (!gains) e.gain.clear();
  if (const JValue* st = opt_key(d, tree, "split_type"); st && st->is_array() && !all_zeros(d, *st)) {
    read_ints(d, tree, "split_type", path, s.split_type);
    for (size_t k = 0; k < s.split_type.size(); ++k) {
      if (s.split_type[k] != 0)
        unsupported(fmt::format("tree {} has a categorical split (node {}); categorical features are not supported",
                                t, k));
    }
  }
  if (const JValue* tp = opt_key(d, tree, "tree_param")) {
    if (const JValue* slv = opt_key(d, *tp, "size_leaf_vector")) {
      if (integer(*slv, path + ".tree_param.size_leaf_vector") > 1)
        unsupported(fmt::format("tree {} has vector leaves (multi-target trees)", t));
    }
  }
  const size_t base = e.nodes_f.size();
  if (n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()) - base)
    fail(ErrorCode::LimitExceeded,
         fmt::format("xgboost model: more than {} tree nodes", std::numeric_limits<int32_t>::max()));

  // Pre-order walk from node 0; each node must be reached exactly once.
  s.new_id.assign(n, -1);
  s.order.clear();
  s.stack.assign(1, 0);
  while (!s.stack.empty()) {
    const int64_t v = s.stack.back();
    s.stack.pop_back();
    if (s.new_id[v] >= 0)
      bad(fmt::format("tree {} reaches node {} twice (the children arrays do not form a tree)", t, v));
    s.new_id[v] = static_cast<int64_t>(s.order.size());
    s.order.push_back(v);
    const int64_t l = static_cast<int64_t>(left[v]), r = static_cast<int64_t>(right[v]);
    if (l == -1 && r == -1) continue;
    if (l < 0 || r < 0 || l >= static_cast<int64_t>(n) || r >= static_cast<int64_t>(n))
      bad(fmt::format("tree {} node {} has children {} and {}, outside [0, {})", t, v, l, r, n));
    s.stack.push_back(r);
    s.stack.push_back(l);
  }

  e.roots.push_back(static_cast<int32_t>(base));
  for (size_t j = 0; j < s.order.size(); ++j) {
    const int64_t v = s.order[j];
    const int32_t self = static_cast<int32_t>(base + j);
    if (covers) e.cover.push_back(static_cast<float>(hessian[static_cast<size_t>(v)]));
    if (gains) e.gain.push_back(static_cast<float>(loss[static_cast<size_t>(v)]));
    if (left[v] == -1) {
      const float w = negate ? -static_cast<float>(split_cond[v]) : static_cast<float>(split_cond[v]);
      e.nodes_f.push_back({w, 0, self, self, tree::kLeaf, 0});
      e.leaf_first.push_back(static_cast<int32_t>(e.w_id.size()));
      e.leaf_count.push_back(1);
      e.w_id.push_back(leaf_id);
      e.w_value.push_back(static_cast<double>(w));
    } else {
      const int64_t feature = static_cast<int64_t>(split_index[v]);
      if (feature < 0 || feature >= num_feature)
        bad(fmt::format("tree {} node {} splits on feature {}, but the model has {} features", t, v, feature,
                        num_feature));
      // XGBoost: x < split_condition goes left (the true side); missing values go left if default_left.
      e.nodes_f.push_back({static_cast<float>(split_cond[v]), static_cast<int32_t>(feature),
                           static_cast<int32_t>(base + static_cast<size_t>(s.new_id[static_cast<size_t>(left[v])])),
                           static_cast<int32_t>(base + static_cast<size_t>(s.new_id[static_cast<size_t>(right[v])])),
                           tree::kLt, static_cast<uint8_t>(default_left[v] != 0 ? 1 : 0)});
      e.leaf_first.push_back(0);
      e.leaf_count.push_back(0);
    }
    e.source_ids.push_back(v);
  }
}

// Margin of a probability, computed in float like XGBoost's ProbToMargin.
float logit(double base_score) {
  if (!(base_score > 0.0 && base_score < 1.0))
    bad(fmt::format("'learner.learner_model_param.base_score' is {}; a logistic objective needs it in (0, 1)",
                    base_score));
  const float p = static_cast<float>(base_score);
  return -std::log(1.0f / p - 1.0f);
}

// Per-node statistics of XGBoost's trees (a third of a model's numbers) that nothing here reads:
// the document validates them but does not keep them.
// (sum_hessian is kept: it is the node cover TreeSHAP needs.)
// (loss_changes too: the split gains feature importance reports.)
constexpr std::string_view kUnreadStatistics[] = {"base_weights", "parents"};

}  // namespace

XGBoostTrees read_xgboost_json(std::span<const uint8_t> bytes) {
  const Document d(bytes, kUnreadStatistics);
  const JValue& root = d.root();
  XGBoostTrees out;

  const JValue& learner = key(d, root, "learner", "");
  const JValue& booster = key(d, learner, "gradient_booster", "learner");
  const std::string booster_name =
      string_of(key(d, booster, "name", "learner.gradient_booster"), "learner.gradient_booster.name");
  if (booster_name != "gbtree")
    unsupported(fmt::format("booster '{}' is not supported (only 'gbtree')", booster_name));

  const JValue& objective_j = key(d, learner, "objective", "learner");
  const std::string objective = string_of(key(d, objective_j, "name", "learner.objective"), "learner.objective.name");
  const bool is_reg_sq = objective == "reg:squarederror";
  const bool is_reg_log = objective == "reg:logistic";
  const bool is_binary = objective == "binary:logistic";
  const bool is_multi = objective == "multi:softprob" || objective == "multi:softmax";
  if (!is_reg_sq && !is_reg_log && !is_binary && !is_multi)
    unsupported(fmt::format("objective '{}' is not supported", objective));
  out.regressor = is_reg_sq || is_reg_log;
  out.reg_logistic = is_reg_log;

  const std::string mp_path = "learner.learner_model_param";
  const JValue& mp = key(d, learner, "learner_model_param", "learner");
  const double base_score = number(key(d, mp, "base_score", mp_path), mp_path + ".base_score");
  const int64_t num_feature = integer(key(d, mp, "num_feature", mp_path), mp_path + ".num_feature");
  const int64_t num_class = integer(key(d, mp, "num_class", mp_path), mp_path + ".num_class");
  if (num_feature < 1) bad(fmt::format("'{}.num_feature' is {}; it must be positive", mp_path, num_feature));
  if (num_feature > std::numeric_limits<int32_t>::max())
    bad(fmt::format("'{}.num_feature' is {}, more than Flock supports", mp_path, num_feature));
  if (const JValue* nt = opt_key(d, mp, "num_target")) {
    const int64_t num_target = integer(*nt, mp_path + ".num_target");
    if (num_target > 1) unsupported(fmt::format("num_target is {} (multi-output models are not supported)", num_target));
  }
  if (!std::isfinite(base_score)) bad(fmt::format("'{}.base_score' is not finite", mp_path));
  if (is_multi && num_class < 2)
    bad(fmt::format("objective '{}' needs '{}.num_class' >= 2, got {}", objective, mp_path, num_class));
  if (!is_multi && num_class > 1)
    bad(fmt::format("objective '{}' does not take '{}.num_class' = {}", objective, mp_path, num_class));
  if (is_multi && num_class > tree::kMaxTreeOutputs)
    bad(fmt::format("'{}.num_class' is {}, more than Flock supports", mp_path, num_class));
  out.num_feature = num_feature;
  out.n_classes = out.regressor ? 0 : (is_multi ? num_class : 2);

  const std::string model_path = "learner.gradient_booster.model";
  const JValue& model = key(d, booster, "model", "learner.gradient_booster");
  const JValue& trees = array(d, model, "trees", model_path);
  out.tree_info = ints(d, model, "tree_info", model_path);
  const auto& tree_info = out.tree_info;
  if (trees.count == 0) bad(fmt::format("'{}.trees' is empty; the model has no trees", model_path));
  if (trees.numeric) bad(fmt::format("'{}.trees[0]' is not a JSON object", model_path));
  if (tree_info.size() != trees.count)
    bad(fmt::format("'{}.tree_info' has {} entries for {} trees", model_path, tree_info.size(), trees.count));
  const int64_t n_groups = is_multi ? num_class : 1;
  for (size_t t = 0; t < tree_info.size(); ++t) {
    if (tree_info[t] < 0 || tree_info[t] >= n_groups)
      bad(fmt::format("'{}.tree_info[{}]' is {}, outside [0, {})", model_path, t, tree_info[t], n_groups));
  }

  tree::Ensemble& e = out.e;
  {  // capacity from the text of the children arrays (at least 2 bytes per element)
    size_t nodes = 0;
    for (uint32_t t = 0; t < trees.count; ++t) {
      const JValue* lc = opt_key(d, d.at(trees, t), "left_children");
      if (lc && lc->is_array()) nodes += lc->numeric ? lc->count : 0;
    }
    e.nodes_f.reserve(nodes);
    e.leaf_first.reserve(nodes);
    e.leaf_count.reserve(nodes);
    e.w_id.reserve(nodes / 2 + trees.count);  // a binary tree has (nodes + 1) / 2 leaves
    e.w_value.reserve(nodes / 2 + trees.count);
    e.roots.reserve(trees.count);
  }
  Scratch scratch;
  for (uint32_t t = 0; t < trees.count; ++t) {
    // The class a tree's leaves score: multi-class trees their group; two-class softmax scores
    // margin(1) - margin(0), so class-0 trees count negatively.
    const int64_t group = tree_info[t];
    const bool two_class_multi = is_multi && num_class == 2;
    const int32_t leaf_id = (is_multi && num_class > 2) ? static_cast<int32_t>(group) : 0;
    add_tree(d, d.at(trees, t), t, num_feature, fmt::format("{}.trees[{}]", model_path, t), leaf_id,
             two_class_multi && group == 0, e, scratch);
  }

  if (const JValue* fn = opt_key(d, learner, "feature_names"); fn && !fn->is_null()) {
    if (!fn->is_array()) bad("'learner.feature_names' is not an array");
    if (fn->numeric && fn->count > 0) bad("'learner.feature_names[0]' is not a string");
    if (!fn->numeric)
      for (uint32_t k = 0; k < fn->count; ++k)
        out.feature_names.push_back(string_of(d.at(*fn, k), fmt::format("learner.feature_names[{}]", k)));
    if (!out.feature_names.empty() && static_cast<int64_t>(out.feature_names.size()) != num_feature)
      bad(fmt::format("'learner.feature_names' has {} names but the model has {} features",
                      out.feature_names.size(), num_feature));
  }
  if (const JValue* ver = opt_key(d, root, "version"); ver && ver->is_array()) {
    // "major.minor.patch" from the leading integers.
    std::string v;
    for (uint32_t k = 0; k < ver->count; ++k) {
      double x = 0;
      if (ver->numeric) {
        x = d.numbers(*ver)[k];
      } else if (const JValue& element = d.at(*ver, k); element.is_number()) {
        x = element.number;
      } else {
        break;
      }
      if (!is_integer(x)) break;
      v += fmt::format("{}{}", k ? "." : "", static_cast<int64_t>(x));
    }
    out.producer_version = v;
  }

  if (out.regressor) {
    out.base_values = {is_reg_log ? logit(base_score) : static_cast<float>(base_score)};
  } else if (out.n_classes == 2) {
    // One score: binary margin, or margin(class 1) - margin(class 0) for two-class softmax.
    const float base = is_binary ? logit(base_score) : 0.0f;
    bool all_positive = true;
    for (double w : e.w_value) all_positive = all_positive && !(w < 0);
    if (all_positive) {
      // Class 1 also gets a 0 weight on every leaf of the first tree: the weights of tree 0's
      // leaves (one each, in node order at the start of the table) become pairs.
      out.class1_zeros = true;
      const size_t n0 = static_cast<size_t>(e.roots.size() > 1 ? e.roots[1] : static_cast<int32_t>(e.nodes_f.size()));
      size_t leaves0 = 0;
      for (size_t i = 0; i < n0; ++i) leaves0 += static_cast<size_t>(e.leaf_count[i]);
      std::vector<int32_t> ids(e.w_id.size() + leaves0);
      std::vector<double> vals(ids.size());
      size_t pos = 0;
      for (size_t i = 0; i < e.nodes_f.size(); ++i) {
        if (e.leaf_count[i] == 0) continue;
        const size_t first = static_cast<size_t>(e.leaf_first[i]);
        e.leaf_first[i] = static_cast<int32_t>(pos);
        ids[pos] = e.w_id[first];
        vals[pos++] = e.w_value[first];
        if (i < n0) {
          ids[pos] = 1;
          vals[pos++] = 0.0;
          e.leaf_count[i] = 2;
        }
      }
      e.w_id = std::move(ids);
      e.w_value = std::move(vals);
      out.base_values = {base, base};
    } else {
      out.base_values = {base};
    }
  } else {
    out.base_values.assign(static_cast<size_t>(out.n_classes), static_cast<float>(base_score));
  }
  return out;
}

}  // namespace flock
