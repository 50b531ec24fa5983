// Explanations of a model's predictions (issue 14): how much each input feature adds to a row's raw
// output (the margin, before any sigmoid / softmax), for whole batches.
//
//   Tree ensembles (TreeEnsembleRegressor / Classifier reading the model input, XGBoost imports):
//     exact path-dependent TreeSHAP (Lundberg et al. 2018, as XGBoost's pred_contribs), weighted
//     by the nodes' training cover (XGBoost's sum_hessian) or, when the model carries none (ONNX),
//     by how many rows of a background batch reach each node. Interaction values as XGBoost's
//     pred_interactions.
//   Linear models (LinearRegressor / LinearClassifier, behind Scaler, Imputer, OneHotEncoder,
//     Normalizer-free Concat of those): exact linear SHAP with respect to the original input
//     columns, against a reference point in the linear model's input: the background batch's
//     mean there, or where an all-zero row (empty strings) lands when no background is given.
//     With several inputs (one per column, categories one-hot encoded), each feature's
//     contribution sums its columns' w (z - ref); features = the inputs' columns in input order.
//
//   Any other model (MLPs, CNNs, pipelines with several inputs), given a background: KernelSHAP
//     (Lundberg & Lee 2017) of the model's prediction (a regressor's value, a classifier's class
//     probabilities) against the background rows (interventional: absent features take background
//     values), a weighted least-squares fit over coalitions with the additivity constraint imposed,
//     so it is additive by construction; exact Shapley values when every coalition is enumerated.
//     When coalitions are sampled, each contribution comes with a standard error (below).
//
// Every explanation is additive: for each row and output, the contributions plus the base value
// equal the raw output (up to rounding).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flock/model.hpp"

namespace flock::explain {

enum class Method { TreeShap, Linear, KernelShap };

// How TreeSHAP's contributions are computed; both give the same values (up to rounding).
// Recursive: XGBoost's walk, per row and tree, O(leaves x depth^2). LeafTables: per tree, a table
// per leaf over the subsets of its path's features is built once for the batch, and each row then
// costs O(leaves x depth) (in the spirit of Fast TreeSHAP v2, Yang 2021). Auto picks by a cost model
// (the tables pay off from a few dozen rows).
enum class TreeShapForm { Auto, Recursive, LeafTables };

struct Options {
  bool interactions = false;
  TreeShapForm tree_shap_form = TreeShapForm::Auto;
  // Rows in the model's input layout (same FeatureBatch shape as the explained batch), or null.
  const FeatureBatch* background = nullptr;
  // KernelSHAP (models no exact method covers, with a background): coalitions per explained row
  // (all 2^F - 2 of them when that is no more, making the values exact), the seed of their
  // sampling, and how many background rows (evenly spaced) stand for the background.
  int64_t kernel_samples = 2048;
  uint64_t seed = 0;
  int64_t kernel_background_rows = 100;
  // KernelSHAP even for a model an exact method explains (needs a background): to check the
  // sampled estimate against the exact values, or to explain a classifier's probabilities.
  bool force_kernel = false;
};

// Most coalitions KernelSHAP samples per explained row (Options::kernel_samples is clamped to it).
constexpr int64_t kMaxKernelSamples = 1 << 16;

struct Explanation {
  Method method = Method::TreeShap;
  int64_t rows = 0;
  int64_t features = 0;              // columns of the model's (single) input
  std::vector<std::string> outputs;  // per explained output: class label, or target index
  // rows x outputs x (features + 1): one contribution per feature, then the base value (XGBoost's
  // pred_contribs layout).
  std::vector<double> contributions;
  // With Options::interactions: rows x outputs x (features + 1) x (features + 1), XGBoost's
  // pred_interactions layout (the diagonal holds main effects, the bias row / column the base
  // value at [features][features]). Each row of the matrix sums to that feature's contribution.
  std::vector<double> interactions;
  // Sum of the per-output raw scores, recomputed: rows x outputs (contributions + base value).
  std::vector<double> raw;
  // Sampled KernelSHAP only (empty for exact methods and enumerated coalitions): rows x outputs x
  // features, the standard error of each contribution's sampling error, from the regression's
  // sandwich (delta-method) covariance over the independent coalition pairs (Covert & Lee 2021).
  // The estimate's error is approximately normal: |error| <= 2 SE with about 95% probability,
  // <= 3 SE with about 99.7%. kernel_samples: coalitions fitted per row (0 for other methods).
  std::vector<double> std_errors;
  int64_t kernel_samples = 0;
};

// Throws flock::Error: UnsupportedOperator for a model no method here explains (with a hint),
// InvalidInput for a batch that does not fit the model or a tree model without covers and without
// a background, LimitExceeded for trees deeper than kMaxShapDepth.
Explanation explain(const Model& model, const FeatureBatch& batch, const Options& options = {});

// Global importance of each feature (flock.feature_importance): named measures, each a value per
// feature of the model's input.
//   Trees: "splits" (branch nodes on the feature), "cover" (their total cover: XGBoost's
//     sum_hessian, else rows of `data` reaching them; absent without either), "gain" (their total
//     loss reduction, XGBoost's loss_changes; XGBoost models only).
//   Linear regressors: "abs_coefficient"; with data "abs_coefficient_x_std" (|w| times the
//     feature's population standard deviation over the data).
//   With data, any model: "mean_abs_shap", the mean over the data's rows of |contribution|
//     (summed over outputs) of explain() with the data as its own background: exact for trees
//     and linear models, KernelSHAP (options' kernel_samples, seed, kernel_background_rows) for
//     the rest, which have no other measure. Without data such a model is UnsupportedOperator
//     with a hint to pass data.
struct Importance {
  int64_t features = 0;
  std::vector<std::string> measures;
  std::vector<std::vector<double>> values;  // per measure, per feature
};
Importance importance(const Model& model, const FeatureBatch* data, const Options& kernel_options = {});

// Which method explain() would use, or throws as explain() does for a model it cannot explain.
Method method_for(const Model& model);

// Deepest tree TreeSHAP accepts (its path buffers grow with the square of the depth).
constexpr int kMaxShapDepth = 256;

}  // namespace flock::explain
