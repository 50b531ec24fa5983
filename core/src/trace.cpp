// flock.trace's core: runs the model's own plan on one row (ModelInternals::run_observed) and
// writes what each step read and wrote; a tree ensemble step also lists each tree's path, taken
// from the kernel's scoring walk (TreeKernel::trace_row). The prediction is computed from the same
// run's outputs by the code Model::predict uses, so the trace and predict cannot disagree.
#include "flock/trace.hpp"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/ml_tree.hpp"
#include "model_internals.hpp"

namespace flock {

namespace {

using nlohmann::json;

// A number as JSON: finite ones as numbers (shortest round-trip form), others as PostgreSQL
// spells them, since JSON has no NaN or infinity.
json number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return v;
}

json element(const Tensor& t, size_t k) {
  switch (t.type) {
    case ElemType::Float:
      return number(t.f[k]);
    case ElemType::Double:
      return number(t.d[k]);
    case ElemType::Int64:
      return t.i[k];
    case ElemType::String:
      return t.s[k];
    case ElemType::Bool:
      return t.b[k] != 0;
  }
  return nullptr;
}

// The values left to list; every listed value takes one.
struct Budget {
  int64_t left = 0;
  bool truncated = false;
};

// {name, type, shape, values[, truncated, total]}: at most `budget` values unless `whole`.
json tensor_json(const std::string& name, const Tensor& t, Budget* budget) {
  json values = json::array();
  const size_t n = t.size();
  size_t listed = n;
  if (budget) {
    listed = static_cast<size_t>(std::min<int64_t>(budget->left, static_cast<int64_t>(n)));
    budget->left -= static_cast<int64_t>(listed);
  }
  for (size_t k = 0; k < listed; ++k) values.push_back(element(t, k));
  json j = {{"name", name}, {"type", to_string(t.type)}, {"shape", t.shape}, {"values", std::move(values)}};
  if (listed < n) {
    j["truncated"] = true;
    j["total"] = n;
    budget->truncated = true;
  }
  return j;
}

const char* mode_name(uint8_t mode) {
  switch (mode) {
    case tree::kLeq:
      return "BRANCH_LEQ";
    case tree::kLt:
      return "BRANCH_LT";
    case tree::kGte:
      return "BRANCH_GTE";
    case tree::kGt:
      return "BRANCH_GT";
    case tree::kEq:
      return "BRANCH_EQ";
    case tree::kNeq:
      return "BRANCH_NEQ";
    default:
      return "LEAF";
  }
}

// A tree step's trees and aggregation. `feature_names`: names of the columns of its input when
// that input is the model's input (else empty).
void trace_trees(const tree::TreeKernel& kernel, const Tensor& input,
                 const std::vector<std::string>& feature_names, Budget& budget, json& step) {
  const tree::Ensemble& e = kernel.ensemble();
  const tree::TreeKernel::Aggregation agg = kernel.aggregation();
  const std::vector<tree::TreeKernel::TracedTree> walks = kernel.trace_row(input, 0);
  auto id_of = [&](int32_t node) -> int64_t {
    return e.source_ids.empty() ? node : e.source_ids[static_cast<size_t>(node)];
  };
  json trees = json::array();
  // Per output, the traced leaves' weights added in tree order, in double (what the kernel
  // aggregates before base values and the post transform).
  std::vector<double> sums(static_cast<size_t>(std::max<int64_t>(agg.outputs, 0)), 0.0);
  size_t listed = 0;
  for (size_t t = 0; t < walks.size(); ++t) {
    const tree::TreeKernel::TracedTree& walk = walks[t];
    const int32_t first = e.leaf_first[static_cast<size_t>(walk.leaf)];
    const int32_t count = e.leaf_count[static_cast<size_t>(walk.leaf)];
    if (agg.single_target) {
      sums[0] += walk.leaf_value;
    } else {
      for (int32_t k = first; k < first + count; ++k)
        sums[static_cast<size_t>(e.w_id[static_cast<size_t>(k)])] += e.w_value[static_cast<size_t>(k)];
    }
    const int64_t cost = static_cast<int64_t>(walk.branches.size()) + 1;
    if (budget.left < cost) {
      budget.truncated = true;
      continue;
    }
    budget.left -= cost;
    ++listed;
    json path = json::array();
    for (const auto& b : walk.branches) {
      const tree::Node<float>& node = e.nodes_f[static_cast<size_t>(b.node)];
      json p = {{"node", id_of(b.node)},
                {"feature", node.feature},
                {"mode", mode_name(node.mode)},
                {"threshold", number(b.threshold)},
                {"value", b.missing ? json(nullptr) : number(b.value)},
                {"missing", b.missing},
                {"missing_goes", node.missing_true ? "true" : "false"},
                {"branch", b.went_true ? "true" : "false"},
                {"next", id_of(b.went_true ? node.yes : node.no)}};
      if (static_cast<size_t>(node.feature) < feature_names.size())
        p["feature_name"] = feature_names[static_cast<size_t>(node.feature)];
      path.push_back(std::move(p));
    }
    json tree_json = {
        {"tree", t}, {"root", id_of(e.roots[t])}, {"path", std::move(path)}, {"leaf", id_of(walk.leaf)}};
    if (agg.single_target) {
      tree_json["value"] = number(walk.leaf_value);
    } else {
      json weights = json::array();
      for (int32_t k = first; k < first + count; ++k)
        weights.push_back({{agg.classifier ? "class" : "target", e.w_id[static_cast<size_t>(k)]},
                           {"value", number(e.w_value[static_cast<size_t>(k)])}});
      tree_json["weights"] = std::move(weights);
    }
    trees.push_back(std::move(tree_json));
  }
  step["trees"] = std::move(trees);
  if (listed < walks.size()) {
    step["trees_truncated"] = true;
    step["trees_total"] = walks.size();
  }
  json base = json::array();
  for (double v : agg.base_values) base.push_back(number(v));
  json leaf_sums = json::array();
  for (double v : sums) leaf_sums.push_back(number(v));
  step["aggregation"] = {{"kind", agg.classifier ? "classifier" : "regressor"},
                         {"aggregate", agg.aggregate},
                         {"post_transform", agg.post_transform},
                         {"base_values", std::move(base)},
                         {"trees", walks.size()},
                         {"outputs", agg.outputs},
                         {"leaf_sums", std::move(leaf_sums)}};
  if (agg.classifier) step["aggregation"]["binary_case"] = agg.binary_case;
}

// The features as the model received them: one entry per value of each input, named by the
// model's feature names (one vector input) or by the input (several inputs).
json features_json(const Signature& sig, const FeatureBatch& row) {
  json features = json::array();
  for (size_t k = 0; k < sig.inputs.size() && k < row.inputs.size(); ++k) {
    const Tensor& t = row.inputs[k];
    const InputSpec& spec = sig.inputs[k];
    for (size_t j = 0; j < t.size(); ++j) {
      std::string name;
      if (sig.inputs.size() == 1 && j < sig.feature_names.size())
        name = sig.feature_names[j];
      else
        name = t.size() == 1 ? spec.name : fmt::format("{}[{}]", spec.name, j);
      json value = element(t, j);
      const bool missing = (t.type == ElemType::Float && std::isnan(t.f[j])) ||
                           (t.type == ElemType::Double && std::isnan(t.d[j]));
      features.push_back({{"name", name}, {"input", spec.name}, {"value", missing ? json(nullptr) : value}});
    }
  }
  return features;
}

json prediction_json(const Model& model, const std::vector<Tensor>& outputs, const FeatureBatch& row) {
  const Signature& sig = model.signature();
  try {
    Prediction p = ModelInternals::prediction_of(model, outputs, row, kPredictAll);
    json j = json::object();
    if (!p.values.empty()) j["value"] = number(p.values[0]);
    if (!p.labels.empty()) j["label"] = p.labels[0];
    if (sig.task == Task::Classification && !p.proba.empty()) {
      json proba = json::array();
      for (int64_t c = 0; c < p.n_classes && c < static_cast<int64_t>(p.proba.size()); ++c)
        proba.push_back(number(p.proba[static_cast<size_t>(c)]));
      j["proba"] = std::move(proba);
    }
    return j;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Cancelled) throw;
    // predict refuses this model (e.g. several values per row): the outputs say it all.
    return {{"error", e.what()}};
  }
}

std::string trace_json_unguarded(const Model& model, const FeatureBatch& row, const TraceOptions& options) {
  if (row.rows != 1) fail(ErrorCode::InvalidInput, fmt::format("a trace is of one row, got {}", row.rows));
  const Signature& sig = model.signature();
  const ModelInternals::GraphView graph = ModelInternals::graph(model);
  Budget budget{std::max<int64_t>(options.max_values, 0), false};
  json steps = json::array();
  auto observe = [&](size_t index, const std::vector<const Tensor*>& in, const std::vector<Tensor>& out) {
    const ModelInternals::StepView& view = graph.steps[index];
    json inputs = json::array();
    for (const std::string& name : view.input_names) inputs.push_back(name);
    json step = {{"step", index}, {"node", view.where}, {"inputs", std::move(inputs)}};
    json outputs = json::array();
    for (size_t k = 0; k < out.size(); ++k) {
      const std::string name = k < view.output_names.size() ? view.output_names[k] : "";
      if (name.empty()) continue;  // an output the graph does not use
      outputs.push_back(tensor_json(name, out[k], &budget));
    }
    step["outputs"] = std::move(outputs);
    if (const auto* trees = dynamic_cast<const tree::TreeKernel*>(view.kernel);
        trees && !in.empty() && in[0]) {
      const bool reads_model_input = sig.inputs.size() == 1 && !view.inputs.empty() &&
                                     !graph.input_slots.empty() && view.inputs[0] == graph.input_slots[0];
      static const std::vector<std::string> kNoNames;
      trace_trees(*trees, *in[0], reads_model_input ? sig.feature_names : kNoNames, budget, step);
    }
    steps.push_back(std::move(step));
  };
  std::vector<Tensor> outputs = ModelInternals::run_observed(model, row, observe);
  json final_outputs = json::array();
  for (size_t k = 0; k < outputs.size(); ++k)
    final_outputs.push_back(
        tensor_json(k < sig.outputs.size() ? sig.outputs[k].name : "", outputs[k], nullptr));
  json j = {{"format", to_string(model.format())},
            {"task", sig.task == Task::Classification ? "classification" : "regression"},
            {"features", features_json(sig, row)},
            {"steps", std::move(steps)},
            {"outputs", std::move(final_outputs)},
            {"prediction", prediction_json(model, outputs, row)},
            {"max_values", options.max_values},
            {"truncated", budget.truncated}};
  // The model's text was checked to be UTF-8 at load; replace anything else rather than throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

// Only flock::Error and std::bad_alloc leave the core (as Model's entry points): a library
// exception (nlohmann::json's, a length_error) becomes Internal.
std::string trace_json(const Model& model, const FeatureBatch& row, const TraceOptions& options) {
  try {
    return trace_json_unguarded(model, row, options);
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail(ErrorCode::Internal, fmt::format("tracing the model: {}", e.what()));
  }
}

}  // namespace flock
