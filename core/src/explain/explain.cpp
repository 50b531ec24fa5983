// explain(): which part of a compiled model an explanation reads (model_internals.hpp's view of its
// graph), the batch as doubles, and the method (tree_shap.cpp, or the linear formula here).
#include "flock/explain.hpp"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <memory>

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
    "LinearRegressor / LinearClassifier models, reading the model's one input directly or through Scalers "
    "and "
    "Imputers; any other model given a background (KernelSHAP).";

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
  std::vector<double> base(static_cast<size_t>(O));
  for (int64_t o = 0; o < O; ++o) {
    double b =
        static_cast<size_t>(o) < scores->intercepts.size() ? scores->intercepts[static_cast<size_t>(o)] : 0.0;
    for (int64_t c = 0; c < cols; ++c)
      b += static_cast<double>(scores->coefficients[static_cast<size_t>(o * cols + c)]) *
           reference[static_cast<size_t>(c)];
    base[static_cast<size_t>(o)] = b;
  }
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
  const Target t = find_target(model);
  if (t.trees) {
    if (!t.trees->raw_scores())
      fail(ErrorCode::UnsupportedOperator, "the tree ensemble's scores are not sums of leaf values",
           kUnsupportedHint);
    return Method::TreeShap;
  }
  return Method::Linear;
}

Importance importance(const Model& model, const FeatureBatch* data) {
  const Target t = find_target(model);
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
    Options options;
    options.background = data;
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
    if (e.code() != ErrorCode::UnsupportedOperator || !options.background) throw;
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
