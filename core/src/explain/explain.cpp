// explain(): which part of a compiled model an explanation reads (model_internals.hpp's view of its
// graph), the batch as doubles, and the method (tree_shap.cpp, or the linear formula here).
#include "flock/explain.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "../kernels/ml_linear.hpp"
#include "../kernels/ml_preprocess.hpp"
#include "../kernels/ml_tree.hpp"
#include "../model_internals.hpp"
#include "flock/checked.hpp"
#include "flock/error.hpp"
#include "kernel_shap.hpp"
#include "tree_shap.hpp"

namespace flock::explain {
namespace {

constexpr const char* kUnsupportedHint =
    "Explanations cover tree ensembles (ONNX-ML TreeEnsembleRegressor / TreeEnsembleClassifier, XGBoost) and "
    "LinearRegressor / LinearClassifier models, reading the model's input directly or through Scalers, "
    "Imputers, one-hot encoders and Concat; any other model given a background (KernelSHAP).";

// Scalers and float Imputers between the model's input and the explained kernel: each maps
// column k to column k, so contributions to their outputs are contributions to the input columns.
struct ColumnStep {
  const preprocess::ScalerKernel* scaler = nullptr;
  const preprocess::ImputerKernel* imputer = nullptr;
};

struct Target {
  const tree::TreeKernel* trees = nullptr;
  const linear::LinearKernel* linear = nullptr;
  std::vector<ColumnStep> chain;
};

// The one tree ensemble or linear model of the graph, reading the model's single input directly or
// through a chain of Scalers and Imputers.
Target find_target(const Model& model) {
  const Signature& sig = model.signature();
  if (sig.inputs.size() != 1)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("the model has {} inputs; explanations need one vector input", sig.inputs.size()),
         kUnsupportedHint);
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  int count = 0;
  for (const auto& step : g.steps)
    if (dynamic_cast<const tree::TreeKernel*>(step.kernel) ||
        dynamic_cast<const linear::LinearKernel*>(step.kernel))
      ++count;
  Target found;
  int slot = g.input_slots[0];
  for (size_t hops = 0; count == 1 && hops <= g.steps.size(); ++hops) {
    const ModelInternals::StepView* next = nullptr;
    for (const auto& step : g.steps)
      if (!step.inputs.empty() && step.inputs[0] == slot && step.inputs.size() == 1 &&
          !step.outputs.empty() &&
          (dynamic_cast<const tree::TreeKernel*>(step.kernel) ||
           dynamic_cast<const linear::LinearKernel*>(step.kernel) ||
           dynamic_cast<const preprocess::ScalerKernel*>(step.kernel) ||
           (dynamic_cast<const preprocess::ImputerKernel*>(step.kernel) &&
            !dynamic_cast<const preprocess::ImputerKernel*>(step.kernel)->imputed_floats().empty())))
        next = &step;
    if (!next) break;
    if ((found.trees = dynamic_cast<const tree::TreeKernel*>(next->kernel))) return found;
    if ((found.linear = dynamic_cast<const linear::LinearKernel*>(next->kernel))) return found;
    found.chain.push_back({dynamic_cast<const preprocess::ScalerKernel*>(next->kernel),
                           dynamic_cast<const preprocess::ImputerKernel*>(next->kernel)});
    slot = next->outputs[0];
  }
  fail(ErrorCode::UnsupportedOperator,
       "the model is not a single tree ensemble or linear model reading its input directly or through "
       "Scalers and "
       "Imputers",
       kUnsupportedHint);
}

// The chain's outputs for rows x cols values, computed as the kernels do (in float).
void apply_chain(const std::vector<ColumnStep>& chain, std::vector<double>& x, int64_t cols) {
  auto at = [](const std::vector<float>& v, int64_t k) {
    return v.size() == 1 ? v[0] : v[static_cast<size_t>(k)];
  };
  for (const ColumnStep& step : chain) {
    if (step.scaler) {
      const auto& off = step.scaler->offsets();
      const auto& scale = step.scaler->scales();
      if ((off.size() > 1 && static_cast<int64_t>(off.size()) != cols) ||
          (scale.size() > 1 && static_cast<int64_t>(scale.size()) != cols))
        fail(ErrorCode::InvalidInput, fmt::format("a Scaler has parameters for other than {} columns", cols));
      for (size_t i = 0; i < x.size(); ++i) {
        const int64_t k = static_cast<int64_t>(i) % cols;
        const float o = off.empty() ? 0.0f : at(off, k), sc = scale.empty() ? 1.0f : at(scale, k);
        x[i] = static_cast<double>((static_cast<float>(x[i]) - o) * sc);
      }
    } else {
      const auto& imputed = step.imputer->imputed_floats();
      if (imputed.size() > 1 && static_cast<int64_t>(imputed.size()) != cols)
        fail(ErrorCode::InvalidInput, fmt::format("an Imputer has values for other than {} columns", cols));
      const float replaced = step.imputer->replaced_float();
      for (size_t i = 0; i < x.size(); ++i) {
        const bool hit = std::isnan(replaced) ? std::isnan(x[i]) : static_cast<float>(x[i]) == replaced;
        if (hit) x[i] = static_cast<double>(at(imputed, static_cast<int64_t>(i) % cols));
      }
    }
  }
}

// The batch's single input as doubles, as the tree kernels compare them: float and int64 input
// through float, double as it is. NaN is missing.
std::vector<double> as_doubles(const Tensor& t, int64_t rows, int64_t cols) {
  const size_t n = static_cast<size_t>(checked_mul(rows, cols, "explained values"));
  std::vector<double> out(n);
  switch (t.type) {
    case ElemType::Float:
      for (size_t k = 0; k < n; ++k) out[k] = static_cast<double>(t.f[k]);
      break;
    case ElemType::Double:
      for (size_t k = 0; k < n; ++k) out[k] = t.d[k];
      break;
    case ElemType::Int64:
      for (size_t k = 0; k < n; ++k) out[k] = static_cast<double>(static_cast<float>(t.i[k]));
      break;
    default:
      fail(ErrorCode::TypeMismatch,
           fmt::format("explanations need numeric input, the model takes {}", to_string(t.type)));
  }
  return out;
}

void check_batch(const FeatureBatch& batch, const char* what, int64_t& rows, int64_t& cols) {
  if (batch.inputs.size() != 1)
    fail(ErrorCode::InvalidInput,
         fmt::format("the {} has {} inputs, the model one", what, batch.inputs.size()));
  const Tensor& t = batch.inputs[0];
  rows = batch.rows;
  cols = t.shape.size() == 2 ? t.shape[1] : -1;
  if (cols < 0 || t.shape[0] != rows || static_cast<int64_t>(t.size()) != checked_mul(rows, cols, what))
    fail(ErrorCode::InvalidInput, fmt::format("the {} is not a [rows, columns] table", what));
}

Explanation explain_trees(const tree::TreeKernel& k, const std::vector<ColumnStep>& chain,
                          const FeatureBatch& batch, const Options& options) {
  const auto scores = k.raw_scores();
  if (!scores)
    fail(ErrorCode::UnsupportedOperator,
         "the tree ensemble's scores are not sums of leaf values (MIN / MAX aggregation)", kUnsupportedHint);
  int64_t rows = 0, cols = 0;
  check_batch(batch, "batch", rows, cols);
  const tree::Ensemble& e = k.ensemble();
  if (e.max_feature >= cols)
    fail(ErrorCode::InvalidInput,
         fmt::format("the trees read column {}, the batch has {}", e.max_feature + 1, cols));
  std::vector<double> background;
  int64_t background_rows = 0;
  if (options.background && e.cover.empty()) {
    int64_t bcols = 0;
    check_batch(*options.background, "background", background_rows, bcols);
    if (bcols != cols)
      fail(ErrorCode::InvalidInput, fmt::format("the background has {} columns, the model {}", bcols, cols));
    background = as_doubles(options.background->inputs[0], background_rows, cols);
    apply_chain(chain, background, cols);
  }
  const bool double_input = batch.inputs[0].type == ElemType::Double;
  const TreeShap shap(e, *scores, double_input, &background, background_rows, cols);

  Explanation out;
  out.method = Method::TreeShap;
  out.rows = rows;
  out.features = cols;
  out.outputs = scores->names;
  const int64_t O = shap.outputs();
  const int64_t stride = checked_add(cols, 1, "features");
  out.contributions.resize(
      static_cast<size_t>(checked_mul(checked_mul(rows, O, "explanations"), stride, "explanations")));
  std::vector<double> x = as_doubles(batch.inputs[0], rows, cols);
  apply_chain(chain, x, cols);
  shap.contributions(x.data(), rows, cols, out.contributions.data(), options.tree_shap_form);
  if (options.interactions) {
    const int64_t cells = checked_mul(checked_mul(rows, O, "interactions"),
                                      checked_mul(stride, stride, "interactions"), "interactions");
    if (cells > (int64_t(1) << 24))
      fail(ErrorCode::LimitExceeded,
           fmt::format("interaction values of {} rows x {} features are too many", rows, cols),
           "Explain fewer rows at a time.");
    out.interactions.resize(static_cast<size_t>(cells));
    shap.interactions(x.data(), rows, cols, out.contributions.data(), out.interactions.data());
  }
  return out;
}

// A linear model's base value per output: its intercept plus its coefficients at the reference point
// (in the linear model's own input columns).
std::vector<double> linear_base_values(const linear::LinearKernel::Scores& scores, const std::vector<double>& reference,
                                       int64_t cols) {
  std::vector<double> base(static_cast<size_t>(scores.outputs));
  for (int64_t o = 0; o < scores.outputs; ++o) {
    double b = static_cast<size_t>(o) < scores.intercepts.size() ? scores.intercepts[static_cast<size_t>(o)] : 0.0;
    for (int64_t c = 0; c < cols; ++c)
      b += static_cast<double>(scores.coefficients[static_cast<size_t>(o * cols + c)]) *
           reference[static_cast<size_t>(c)];
    base[static_cast<size_t>(o)] = b;
  }
  return base;
}

Explanation explain_linear(const linear::LinearKernel& k, const std::vector<ColumnStep>& chain,
                           const FeatureBatch& batch, const Options& options) {
  if (options.interactions)
    fail(ErrorCode::UnsupportedOperator,
         "a linear model has no interactions (its interaction values are all zero)",
         "Call without interactions => true.");
  int64_t rows = 0, cols = 0;
  check_batch(batch, "batch", rows, cols);
  const auto scores = k.scores(cols);
  if (!scores)
    fail(ErrorCode::InvalidInput, fmt::format("the linear model's coefficients do not fit {} columns", cols));
  // The reference point, in the linear model's input: the background's mean there, or where an
  // all-zero input row lands (zero itself without Scalers / Imputers).
  std::vector<double> reference(static_cast<size_t>(cols), 0.0);
  apply_chain(chain, reference, cols);
  if (options.background) {
    int64_t brows = 0, bcols = 0;
    check_batch(*options.background, "background", brows, bcols);
    if (bcols != cols)
      fail(ErrorCode::InvalidInput, fmt::format("the background has {} columns, the model {}", bcols, cols));
    if (brows == 0) fail(ErrorCode::InvalidInput, "the background has no rows");
    std::vector<double> b = as_doubles(options.background->inputs[0], brows, cols);
    apply_chain(chain, b, cols);
    std::fill(reference.begin(), reference.end(), 0.0);
    for (int64_t r = 0; r < brows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        reference[static_cast<size_t>(c)] += b[static_cast<size_t>(r * cols + c)];
    for (double& m : reference) m /= static_cast<double>(brows);
  }
  std::vector<double> x = as_doubles(batch.inputs[0], rows, cols);
  apply_chain(chain, x, cols);
  Explanation out;
  out.method = Method::Linear;
  out.rows = rows;
  out.features = cols;
  out.outputs = scores->names;
  const int64_t O = scores->outputs, stride = cols + 1;
  out.contributions.resize(
      static_cast<size_t>(checked_mul(checked_mul(rows, O, "explanations"), stride, "explanations")));
  const std::vector<double> base = linear_base_values(*scores, reference, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (std::isnan(x[static_cast<size_t>(r * cols + c)]))
        fail(ErrorCode::MissingValue, fmt::format("row {} has a missing value in column {}", r + 1, c + 1),
             "A linear model has no missing-value semantics: pass a value, or put an Imputer before it.");
    for (int64_t o = 0; o < O; ++o) {
      double* p = out.contributions.data() + (r * O + o) * stride;
      for (int64_t c = 0; c < cols; ++c)
        p[c] = static_cast<double>(scores->coefficients[static_cast<size_t>(o * cols + c)]) *
               (x[static_cast<size_t>(r * cols + c)] - reference[static_cast<size_t>(c)]);
      p[cols] = base[static_cast<size_t>(o)];
    }
  }
  return out;
}

// ---- Linear pipelines over several inputs (one-hot encoded categories, ...) ----------------------
//
// A LinearRegressor / LinearClassifier fed by steps that each keep every value tied to one model
// feature (Concat along the columns, Scaler, Imputer, Cast, Identity, OneHotEncoder, and Reshape /
// Flatten / Squeeze / Unsqueeze that keep the rows) is a sum of one function per feature:
// score = intercept + sum_f sum_{c from f} w_c z_c(x_f). Its exact (interventional) SHAP values are
// then phi_f = sum_{c from f} w_c (z_c(x_f) - E[z_c]), the base value intercept + sum_c w_c E[z_c]:
// for a categorical feature, its one-hot columns' coefficients times their distance from the
// reference. The reference point z is the one the single-input linear explainer uses: the
// background's mean of the linear model's input, or where an all-zero input row lands (zeros,
// empty strings) without a background. Which feature each linear input column comes from is read
// from the steps' kinds and the shapes they produce on a probe run.

// Per row element of a value: the model feature (input columns in input order) it depends on, or
// kMixed (several features, or a step not understood).
constexpr int64_t kMixed = -2;

struct LinearPipeline {
  const linear::LinearKernel* linear = nullptr;
  std::vector<int64_t> column_feature;  // per column of the linear kernel's input
  int64_t features = 0;
};

std::string op_type(const std::string& where) { return where.substr(0, where.find(' ')); }

// A batch of `rows` rows of zeros / empty strings in the model's input layout.
FeatureBatch zero_batch(const Signature& sig, int64_t rows) {
  FeatureBatch batch;
  batch.rows = rows;
  for (const InputSpec& in : sig.inputs) {
    if (in.width < 1) fail(ErrorCode::UnsupportedOperator, "an input has no fixed width", kUnsupportedHint);
    batch.inputs.emplace_back(in.type, std::vector<int64_t>{rows, in.width});
  }
  return batch;
}

// Runs the model on `batch`, returning the linear step's input as doubles (rows x columns). With
// `analyse` (the probe run), also works out which feature each of its columns comes from.
std::vector<double> linear_input(const Model& model, const FeatureBatch& batch, LinearPipeline& pipeline,
                                 bool analyse) {
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  const Signature& sig = model.signature();
  const int64_t rows = batch.rows;
  std::map<int, std::vector<int64_t>> origin;  // slot -> per row element
  std::set<int> constants(g.constant_slots.begin(), g.constant_slots.end());
  if (analyse) {
    int64_t next = 0;
    for (size_t k = 0; k < sig.inputs.size(); ++k) {
      std::vector<int64_t>& o = origin[g.input_slots[k]];
      for (int64_t j = 0; j < sig.inputs[k].width; ++j) o.push_back(next++);
    }
    pipeline.features = next;
  }
  std::vector<double> z;
  bool seen = false;
  auto per_row = [rows](const Tensor& t) -> int64_t {
    if (t.shape.empty() || t.shape[0] != rows || rows == 0) return -1;
    return static_cast<int64_t>(t.size()) / rows;
  };
  auto observe = [&](size_t index, const std::vector<const Tensor*>& in, const std::vector<Tensor>& out) {
    const ModelInternals::StepView& view = g.steps[index];
    if (view.kernel == static_cast<const Kernel*>(pipeline.linear) && !in.empty() && in[0]) {
      const Tensor& t = *in[0];
      if (t.type != ElemType::Float || t.shape.size() != 2 || t.shape[0] != rows)
        fail(ErrorCode::UnsupportedOperator, "the linear model's input is not a float [rows, columns] table",
             kUnsupportedHint);
      z.resize(t.size());
      for (size_t k = 0; k < t.size(); ++k) z[k] = static_cast<double>(t.f[k]);
      seen = true;
      if (analyse) {
        auto it = origin.find(view.inputs[0]);
        pipeline.column_feature =
            it == origin.end() ? std::vector<int64_t>(static_cast<size_t>(t.shape[1]), kMixed) : it->second;
      }
      return;
    }
    if (!analyse) return;
    const std::string op = op_type(view.where);
    auto known = [&](size_t k) -> const std::vector<int64_t>* {
      if (k >= view.inputs.size() || k >= in.size() || !in[k]) return nullptr;
      auto it = origin.find(view.inputs[k]);
      return it == origin.end() || per_row(*in[k]) != static_cast<int64_t>(it->second.size()) ? nullptr
                                                                                              : &it->second;
    };
    std::vector<int64_t> result;
    bool ok = false;
    if (op == "Scaler" || op == "Imputer" || op == "Cast" || op == "Identity" || op == "Reshape" ||
        op == "Flatten" || op == "Squeeze" || op == "Unsqueeze") {
      // Element-wise, or the same row elements in the same order under another shape.
      if (const auto* o = known(0); o && !out.empty() && per_row(out[0]) == static_cast<int64_t>(o->size())) {
        result = *o;
        ok = true;
      }
    } else if (op == "OneHotEncoder") {
      if (const auto* o = known(0); o && !out.empty() && !o->empty() && per_row(out[0]) > 0 &&
                                    per_row(out[0]) % static_cast<int64_t>(o->size()) == 0) {
        const int64_t categories = per_row(out[0]) / static_cast<int64_t>(o->size());
        for (int64_t e : *o) result.insert(result.end(), static_cast<size_t>(categories), e);
        ok = true;
      }
    } else if (op == "Concat" && !out.empty()) {
      // Along axis 1: each row's elements are the inputs' row elements one after the other. Any
      // other axis interleaves them (checked on the shapes: only dimension 1 grows).
      ok = out[0].shape.size() >= 2 && per_row(out[0]) >= 0;
      int64_t along = 0;
      for (size_t k = 0; ok && k < view.inputs.size(); ++k) {
        const auto* o = known(k);
        ok = o && in[k]->shape.size() == out[0].shape.size();
        for (size_t d = 2; ok && d < out[0].shape.size(); ++d) ok = in[k]->shape[d] == out[0].shape[d];
        if (ok) {
          along += in[k]->shape[1];
          result.insert(result.end(), o->begin(), o->end());
        }
      }
      ok = ok && along == out[0].shape[1];
    }
    for (size_t k = 0; k < view.outputs.size() && k < out.size(); ++k) {
      if (view.outputs[k] < 0) continue;
      if (ok && k == 0) {
        origin[view.outputs[k]] = result;
      } else if (const int64_t width = per_row(out[k]); width >= 0) {
        origin[view.outputs[k]] = std::vector<int64_t>(static_cast<size_t>(width), kMixed);
      }
    }
  };
  ModelInternals::run_observed(model, batch, observe);
  if (!seen) fail(ErrorCode::UnsupportedOperator, "the linear model did not run", kUnsupportedHint);
  return z;
}

// The model's one LinearRegressor / LinearClassifier, when every column it reads comes from one
// feature; nullopt otherwise (no such model, a tree ensemble, a step mixing features).
std::optional<LinearPipeline> find_linear_pipeline(const Model& model) {
  const ModelInternals::GraphView g = ModelInternals::graph(model);
  LinearPipeline p;
  int linear = 0;
  for (const auto& step : g.steps) {
    if (dynamic_cast<const tree::TreeKernel*>(step.kernel)) return std::nullopt;
    if (const auto* k = dynamic_cast<const linear::LinearKernel*>(step.kernel)) {
      p.linear = k;
      ++linear;
    }
  }
  if (linear != 1) return std::nullopt;
  try {
    linear_input(model, zero_batch(model.signature(), 2), p, true);
  } catch (const Error&) {
    return std::nullopt;  // the probe does not run (an encoder refusing unknown values, ...)
  }
  for (int64_t f : p.column_feature)
    if (f == kMixed) return std::nullopt;
  return p;
}

Explanation explain_linear_pipeline(const Model& model, LinearPipeline& p, const FeatureBatch& batch,
                                    const Options& options) {
  if (options.interactions)
    fail(ErrorCode::UnsupportedOperator,
         "a linear model has no interactions (its interaction values are all zero)",
         "Call without interactions => true.");
  const int64_t cols = static_cast<int64_t>(p.column_feature.size());
  const auto scores = p.linear->scores(cols);
  if (!scores)
    fail(ErrorCode::InvalidInput, fmt::format("the linear model's coefficients do not fit {} columns", cols));
  std::vector<double> reference(static_cast<size_t>(cols), 0.0);
  if (options.background) {
    const int64_t brows = options.background->rows;
    if (brows == 0) fail(ErrorCode::InvalidInput, "the background has no rows");
    const std::vector<double> b = linear_input(model, *options.background, p, false);
    for (int64_t r = 0; r < brows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        reference[static_cast<size_t>(c)] += b[static_cast<size_t>(r * cols + c)];
    for (double& m : reference) m /= static_cast<double>(brows);
  } else {
    const std::vector<double> zero = linear_input(model, zero_batch(model.signature(), 1), p, false);
    reference.assign(zero.begin(), zero.end());
  }
  const int64_t rows = batch.rows;
  const std::vector<double> x = rows ? linear_input(model, batch, p, false) : std::vector<double>{};
  const int64_t F = p.features, O = scores->outputs, stride = F + 1;
  Explanation out;
  out.method = Method::Linear;
  out.rows = rows;
  out.features = F;
  out.outputs = scores->names;
  out.contributions.assign(
      static_cast<size_t>(checked_mul(checked_mul(rows, O, "explanations"), stride, "explanations")), 0.0);
  const std::vector<double> base = linear_base_values(*scores, reference, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (std::isnan(x[static_cast<size_t>(r * cols + c)]))
        fail(ErrorCode::MissingValue,
             fmt::format("row {} has a missing value in the linear model's column {}", r + 1, c + 1),
             "A linear model has no missing-value semantics: pass a value, or put an Imputer before it.");
    for (int64_t o = 0; o < O; ++o) {
      double* q = out.contributions.data() + (r * O + o) * stride;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t f = p.column_feature[static_cast<size_t>(c)];
        const double part = static_cast<double>(scores->coefficients[static_cast<size_t>(o * cols + c)]) *
                            (x[static_cast<size_t>(r * cols + c)] - reference[static_cast<size_t>(c)]);
        if (f >= 0)
          q[f] += part;
        else
          q[F] += part;  // a constant column: zero unless the background differs from it
      }
      q[F] += base[static_cast<size_t>(o)];
    }
  }
  return out;
}

void fill_raw(Explanation& out) {
  const int64_t O = static_cast<int64_t>(out.outputs.size()), stride = out.features + 1;
  out.raw.assign(static_cast<size_t>(out.rows * O), 0.0);
  for (int64_t r = 0; r < out.rows * O; ++r) {
    double s = 0;
    for (int64_t c = 0; c <= out.features; ++c) {
      const double v = out.contributions[static_cast<size_t>(r * stride + c)];
      if (!std::isfinite(v))
        fail(ErrorCode::InvalidInput,
             fmt::format("row {}: a contribution is not a finite number",
                         r / static_cast<int64_t>(out.outputs.size()) + 1),
             "The model's leaf values or coefficients overflow for this input.");
      s += v;
    }
    out.raw[static_cast<size_t>(r)] = s;
  }
}

}  // namespace

Method method_for(const Model& model) {
  Target t;
  try {
    t = find_target(model);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::UnsupportedOperator || !find_linear_pipeline(model)) throw;
    return Method::Linear;
  }
  if (t.trees) {
    if (!t.trees->raw_scores())
      fail(ErrorCode::UnsupportedOperator, "the tree ensemble's scores are not sums of leaf values",
           kUnsupportedHint);
    return Method::TreeShap;
  }
  return Method::Linear;
}

Importance importance(const Model& model, const FeatureBatch* data, const Options& kernel_options) {
  // Models no exact explainer reads (MLPs, CNNs, tree pipelines over several inputs, linear
  // pipelines): no built-in measure, only mean |SHAP| over data (exact for linear pipelines,
  // KernelSHAP otherwise, with the caller's sample count and seed).
  Target t;
  bool exact_target = true;
  try {
    t = find_target(model);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::UnsupportedOperator) throw;
    exact_target = false;
  }
  if (!exact_target) {
    if (!data)
      fail(ErrorCode::UnsupportedOperator, "the model has no built-in importance measure",
           "Pass data (a data set reference or a query) for the mean |SHAP| of each feature over its rows.");
    if (data->rows == 0) fail(ErrorCode::InvalidInput, "the data has no rows");
    Options options = kernel_options;
    options.background = data;
    options.interactions = false;
    options.force_kernel = false;
    const Explanation e = explain(model, *data, options);
    Importance out;
    out.features = e.features;
    const size_t F = static_cast<size_t>(e.features), O = e.outputs.size(), S = F + 1;
    std::vector<double> mean_abs(F, 0.0);
    for (int64_t r = 0; r < e.rows; ++r)
      for (size_t o = 0; o < O; ++o)
        for (size_t k = 0; k < F; ++k)
          mean_abs[k] += std::abs(e.contributions[(static_cast<size_t>(r) * O + o) * S + k]);
    for (double& v : mean_abs) v /= static_cast<double>(e.rows);
    out.measures.push_back("mean_abs_shap");
    out.values.push_back(mean_abs);
    return out;
  }
  Importance out;
  out.features = model.signature().inputs[0].width;
  if (out.features < 1)
    fail(ErrorCode::UnsupportedOperator, "the model's input has no fixed width", kUnsupportedHint);
  const size_t F = static_cast<size_t>(out.features);
  std::vector<double> data_values;
  int64_t rows = 0, cols = 0;
  if (data) {
    check_batch(*data, "data", rows, cols);
    if (cols != out.features)
      fail(ErrorCode::InvalidInput, fmt::format("the data has {} columns, the model {}", cols, out.features));
    if (rows == 0) fail(ErrorCode::InvalidInput, "the data has no rows");
    data_values = as_doubles(data->inputs[0], rows, cols);
    apply_chain(t.chain, data_values, cols);
  }
  if (t.trees) {
    const tree::Ensemble& e = t.trees->ensemble();
    std::vector<double> splits(F, 0.0), cover(F, 0.0), gain(F, 0.0);
    std::vector<double> node_cover(e.cover.begin(), e.cover.end());
    if (node_cover.empty() && data) {
      const auto scores = t.trees->raw_scores();
      if (scores) {
        const TreeShap shap(e, *scores, data->inputs[0].type == ElemType::Double, &data_values, rows, cols);
        node_cover = shap.cover();
      }
    }
    for (size_t i = 0; i < e.nodes_f.size(); ++i) {
      const tree::Node<float>& nd = e.nodes_f[i];
      if (nd.mode == tree::kLeaf || nd.feature < 0 || static_cast<size_t>(nd.feature) >= F) continue;
      splits[static_cast<size_t>(nd.feature)] += 1;
      if (!node_cover.empty()) cover[static_cast<size_t>(nd.feature)] += node_cover[i];
      if (!e.gain.empty()) gain[static_cast<size_t>(nd.feature)] += e.gain[i];
    }
    out.measures.push_back("splits");
    out.values.push_back(splits);
    if (!node_cover.empty()) {
      out.measures.push_back("cover");
      out.values.push_back(cover);
    }
    if (!e.gain.empty()) {
      out.measures.push_back("gain");
      out.values.push_back(gain);
    }
  } else if (const auto affine = t.linear->affine();
             affine && affine->coefficients.size() == F && t.chain.empty()) {
    std::vector<double> abs_coef(F);
    for (size_t k = 0; k < F; ++k) abs_coef[k] = std::abs(static_cast<double>(affine->coefficients[k]));
    out.measures.push_back("abs_coefficient");
    out.values.push_back(abs_coef);
    if (data) {
      std::vector<double> spread(F, 0.0);
      for (size_t k = 0; k < F; ++k) {
        double mean = 0, square = 0;
        for (int64_t r = 0; r < rows; ++r) mean += data_values[static_cast<size_t>(r) * F + k];
        mean /= static_cast<double>(rows);
        for (int64_t r = 0; r < rows; ++r) {
          const double d = data_values[static_cast<size_t>(r) * F + k] - mean;
          square += d * d;
        }
        spread[k] = abs_coef[k] * std::sqrt(square / static_cast<double>(rows));
      }
      out.measures.push_back("abs_coefficient_x_std");
      out.values.push_back(spread);
    }
  }
  if (out.measures.empty() && !data)
    fail(ErrorCode::UnsupportedOperator, "the model has no built-in importance measure",
         "Pass data (a data set reference or a query) for the mean |SHAP| of each feature.");
  if (data) {
    Options options = kernel_options;
    options.background = data;
    options.interactions = false;
    options.force_kernel = false;
    const Explanation e = explain(model, *data, options);
    const size_t O = e.outputs.size(), S = F + 1;
    std::vector<double> mean_abs(F, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (size_t o = 0; o < O; ++o)
        for (size_t k = 0; k < F; ++k)
          mean_abs[k] += std::abs(e.contributions[(static_cast<size_t>(r) * O + o) * S + k]);
    for (double& v : mean_abs) v /= static_cast<double>(rows);
    out.measures.push_back("mean_abs_shap");
    out.values.push_back(mean_abs);
  }
  return out;
}

Explanation explain(const Model& model, const FeatureBatch& batch, const Options& options) {
  if (options.force_kernel) {
    if (!options.background)
      fail(ErrorCode::InvalidInput, "KernelSHAP needs a background", "Pass a background data set or query.");
    Explanation out = kernel_shap(model, batch, options);
    fill_raw(out);
    return out;
  }
  Target t;
  try {
    t = find_target(model);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::UnsupportedOperator) throw;
    if (auto pipeline = find_linear_pipeline(model)) {
      Explanation out = explain_linear_pipeline(model, *pipeline, batch, options);
      fill_raw(out);
      return out;
    }
    if (!options.background) throw;
    Explanation out = kernel_shap(model, batch, options);
    fill_raw(out);
    return out;
  }
  Explanation out = t.trees ? explain_trees(*t.trees, t.chain, batch, options)
                            : explain_linear(*t.linear, t.chain, batch, options);
  fill_raw(out);
  return out;
}

}  // namespace flock::explain
