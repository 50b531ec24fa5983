// Drift and fairness statistics (issue 14): pure functions over samples, no PostgreSQL.
//
// Drift compares a current sample with a baseline sample of one variable:
// - PSI (population stability index), binned on the baseline's deciles (numeric) or on the
//   categories seen in either sample (categorical); an empty bin's proportion counts as
//   kPsiEpsilon so that the logarithm stays finite.
// - The two-sample Kolmogorov-Smirnov statistic D and its two-sided p-value, computed as
//   scipy.stats.ks_2samp(method='auto') does: exact when both samples have at most
//   kKsExactMaxSize values, else asymptotic: the finite-n one-sample distribution
//   kstwo.sf(D, round(m n / (m + n))), ported from scipy 1.10.1 (core/src/monitor/kolmogorov.cpp).
// - Pearson's chi-squared test of homogeneity on the 2 x k table of category counts (no Yates
//   correction), p-value from Boost.Math's chi_squared distribution.
//
// Fairness metrics follow Fairlearn's definitions (fairlearn.metrics: selection_rate,
// true_positive_rate, false_positive_rate, demographic_parity_difference / _ratio,
// equalized_odds_difference, equal_opportunity_difference): a difference is the largest minus
// the smallest per-group value, a ratio the smallest over the largest. A rate whose denominator is
// zero in a group (no positives for the TPR, ...) is undefined there (std::nullopt) and left out
// of the differences.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flock::monitor {

// Quantile bins for numeric PSI: cut points at the baseline's 10%, 20%, ..., 90% quantiles
// (numpy's default 'linear' interpolation), duplicates dropped (ties make fewer bins).
constexpr int kPsiBins = 10;
// The proportion an empty bin counts as, in either sample.
constexpr double kPsiEpsilon = 1e-4;
// ks_2samp's MAX_AUTO_N: exact p-value up to this many values in the larger sample.
constexpr int64_t kKsExactMaxSize = 10000;
// Default drift flags (documented in the README).
constexpr double kPsiDriftThreshold = 0.2;
constexpr double kPValueDriftThreshold = 0.05;

struct NumericDrift {
  int64_t n_baseline = 0;
  int64_t n_current = 0;
  double psi = 0;
  int bins = 0;  // PSI bins after dropping duplicate cut points
  double ks_statistic = 0;
  double ks_pvalue = 1;
  bool ks_exact = true;  // false: asymptotic p-value
};

struct CategoricalDrift {
  int64_t n_baseline = 0;
  int64_t n_current = 0;
  double psi = 0;
  int categories = 0;
  double chi2 = 0;
  int64_t chi2_dof = 0;
  double chi2_pvalue = 1;
};

// Values must be finite (the caller drops missing ones); both samples non-empty, else
// Error(InvalidInput).
NumericDrift numeric_drift(std::vector<double> baseline, std::vector<double> current);
CategoricalDrift categorical_drift(const std::vector<std::string>& baseline,
                                   const std::vector<std::string>& current);

// The pieces, for tests and for callers that want one statistic.
std::vector<double> psi_cut_points(const std::vector<double>& sorted_baseline);
double psi(const std::vector<double>& baseline_counts, const std::vector<double>& current_counts);
struct KsResult {
  double statistic;
  double pvalue;
  bool exact;
};
KsResult ks_2samp(std::vector<double> a, std::vector<double> b);
// P(D >= h / lcm(m, n)) for the two-sided two-sample statistic under the null, exactly.
double ks_exact_pvalue(int64_t m, int64_t n, int64_t h);
// The same for m = n, by scipy's alternating closed form (_compute_prob_outside_square).
double ks_exact_pvalue_equal_sizes(int64_t n, int64_t h);
// P(D_n >= x) for the two-sided one-sample Kolmogorov-Smirnov statistic with n values:
// scipy.stats.kstwo.sf(x, n) (scipy 1.10.1's _kolmogn: Ruben-Gambino ends, Smirnov's sum, Durbin's
// matrix, Pomeranz's recursion, Pelz-Good, chosen as Simard & L'Ecuyer do).
double kolmogorov_n_sf(int64_t n, double x);

// Per group of a binary classification: y_true / y_pred are 0 or 1, group is 0..groups-1.
struct ClassificationGroup {
  int64_t count = 0;
  int64_t positives = 0;  // y_true = 1
  int64_t predicted_positives = 0;
  int64_t true_positives = 0;
  int64_t false_positives = 0;
  double selection_rate = 0;                  // predicted positives / count
  std::optional<double> true_positive_rate;   // TP / (TP + FN)
  std::optional<double> false_positive_rate;  // FP / (FP + TN)
  std::optional<double> precision;            // TP / (TP + FP)
  double accuracy = 0;                        // (TP + TN) / count
};
struct ClassificationFairness {
  std::vector<ClassificationGroup> groups;
  ClassificationGroup overall;
  double demographic_parity_difference = 0;
  std::optional<double> demographic_parity_ratio;  // undefined when every selection rate is 0
  std::optional<double> true_positive_rate_difference;
  std::optional<double> false_positive_rate_difference;
  std::optional<double> equalized_odds_difference;     // max of the two differences above
  std::optional<double> equal_opportunity_difference;  // the TPR difference
  // Ratios: smallest over largest defined per-group value; undefined when none is or the largest is 0.
  std::optional<double> true_positive_rate_ratio;
  std::optional<double> false_positive_rate_ratio;
  std::optional<double> equalized_odds_ratio;     // min of the two ratios above
  std::optional<double> equal_opportunity_ratio;  // the TPR ratio
  std::optional<double> accuracy_difference;
};
ClassificationFairness classification_fairness(const std::vector<int32_t>& group, int32_t groups,
                                               const std::vector<uint8_t>& y_true,
                                               const std::vector<uint8_t>& y_pred);

struct RegressionGroup {
  int64_t count = 0;
  double mean_label = 0;
  double mean_prediction = 0;
  double mean_error = 0;  // mean(prediction - label)
  double mae = 0;
  double rmse = 0;
};
struct RegressionFairness {
  std::vector<RegressionGroup> groups;
  RegressionGroup overall;
  double mean_error_difference = 0;
  double mae_difference = 0;
  double rmse_difference = 0;
  std::optional<double> mae_ratio;  // smallest over largest; undefined when every MAE is 0
};
RegressionFairness regression_fairness(const std::vector<int32_t>& group, int32_t groups,
                                       const std::vector<double>& y_true, const std::vector<double>& y_pred);

}  // namespace flock::monitor
