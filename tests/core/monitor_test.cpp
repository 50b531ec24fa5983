// Drift and fairness statistics (core/src/monitor/): checked against closed forms and independent
// computations; the SQL tests compare the same numbers with scipy / numpy.
#include "flock/monitor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "flock/error.hpp"

using namespace flock::monitor;

namespace {

// Pr(D_{n,n} >= h/n) = 2 sum_{k>=1} (-1)^(k-1) C(2n, n-kh) / C(2n, n): the classical closed form
// for equal samples, summed in long double.
double equal_sizes_pvalue(int n, int h) {
  long double total = 0;
  for (int k = 1; k * h <= n; ++k) {
    long double term = 1;  // C(2n, n-kh) / C(2n, n) = prod_{j<kh} (n-j)/(n+j+1)
    for (int j = 0; j < k * h; ++j) term *= (long double)(n - j) / (long double)(n + j + 1);
    total += (k % 2 == 1) ? term : -term;
  }
  return double(2 * total);
}

}  // namespace

TEST(MonitorKs, ExactEqualSizesMatchesClosedForm) {
  for (int n : {1, 2, 5, 17, 60})
    for (int h = 1; h <= n; ++h)
      EXPECT_NEAR(ks_exact_pvalue(n, n, h), equal_sizes_pvalue(n, h), 1e-12) << n << " " << h;
}

TEST(MonitorKs, ExactUnequalSizesSmallCaseByEnumeration) {
  // m = 3, n = 2: all C(5, 2) = 10 orderings of the pooled sample, D computed for each.
  const int m = 3, n = 2;
  std::vector<int> counts(m * n + 1);
  for (int mask = 0; mask < 32; ++mask) {
    if (__builtin_popcount(unsigned(mask)) != n) continue;
    int i = 0, j = 0, largest = 0;
    for (int bit = 0; bit < 5; ++bit) {
      if (mask & (1 << bit))
        ++j;
      else
        ++i;
      largest = std::max(largest, std::abs(i * n - j * m));
    }
    counts[size_t(largest)] += 1;
  }
  for (int h = 1; h <= m * n; ++h) {
    int at_least = 0;
    for (int k = h; k <= m * n; ++k) at_least += counts[size_t(k)];
    EXPECT_NEAR(ks_exact_pvalue(m, n, h), at_least / 10.0, 1e-15) << h;  // g = 1: h in units of 1/6
  }
}

TEST(MonitorKs, StatisticWithTies) {
  const KsResult r = ks_2samp({1, 2, 2, 3}, {2, 2, 2, 4});
  // F_a - F_b: at 1: 1/4 - 0; at 2: 3/4 - 3/4; at 3: 1 - 3/4; at 4: 0.
  EXPECT_DOUBLE_EQ(r.statistic, 0.25);
  EXPECT_TRUE(r.exact);
  EXPECT_NEAR(r.pvalue, equal_sizes_pvalue(4, 1), 1e-12);
}

TEST(MonitorKs, KolmogorovSeriesAgreeAtTheirCrossover) {
  // Both forms of Q(z) around the switch at z = 1.18, and the tails.
  EXPECT_NEAR(kolmogorov_sf(1.1799999), kolmogorov_sf(1.18), 1e-6);
  EXPECT_DOUBLE_EQ(kolmogorov_sf(0), 1.0);
  EXPECT_NEAR(kolmogorov_sf(1.358), 0.05, 1e-3);  // the classical 5% critical value
  EXPECT_LT(kolmogorov_sf(5), 1e-20);
}

TEST(MonitorPsi, CutPointsAreDecilesWithTiesDropped) {
  std::vector<double> v;
  for (int i = 0; i <= 10; ++i) v.push_back(i);
  const auto cuts = psi_cut_points(v);
  ASSERT_EQ(cuts.size(), 9u);
  for (int k = 1; k <= 9; ++k) EXPECT_DOUBLE_EQ(cuts[size_t(k - 1)], k);
  // Levels 0.1 .. 0.7 fall on the tied 1s (one cut), 0.8 and 0.9 between 1 and 2: 1.2, 1.6.
  const auto tied = psi_cut_points({1, 1, 1, 1, 2});
  ASSERT_EQ(tied.size(), 3u);
  EXPECT_DOUBLE_EQ(tied[1], 1.2);
  EXPECT_DOUBLE_EQ(tied[2], 1.6);
}

TEST(MonitorPsi, EmptyBinsCountAsEpsilon) {
  const double p = psi({5, 5}, {10, 0});
  const double expected =
      (1.0 - 0.5) * std::log(1.0 / 0.5) + (kPsiEpsilon - 0.5) * std::log(kPsiEpsilon / 0.5);
  EXPECT_NEAR(p, expected, 1e-12);
  EXPECT_DOUBLE_EQ(psi({3, 7}, {6, 14}), 0.0);
}

TEST(MonitorChi2, TwoByTwoMatchesClosedForm) {
  // 2 x 3 table; dof 2: p = exp(-chi2 / 2).
  const auto r = categorical_drift({"a", "a", "b", "c", "c", "c"}, {"a", "b", "b", "b", "c", "c"});
  EXPECT_EQ(r.chi2_dof, 2);
  EXPECT_EQ(r.categories, 3);
  // Expected: each row has 6, columns a=3, b=4, c=5 over 12: E = 1.5, 2, 2.5 in each row.
  const double chi2 = 2 * ((0.5 * 0.5) / 1.5 + 1.0 / 2 + 0.25 / 2.5);
  EXPECT_NEAR(r.chi2, chi2, 1e-12);
  EXPECT_NEAR(r.chi2_pvalue, std::exp(-chi2 / 2), 1e-12);
  const auto one = categorical_drift({"x"}, {"x", "x"});
  EXPECT_EQ(one.chi2_dof, 0);
  EXPECT_DOUBLE_EQ(one.chi2_pvalue, 1.0);
}

TEST(MonitorDrift, EmptySampleIsAnError) {
  EXPECT_THROW(numeric_drift({}, {1.0}), flock::Error);
  EXPECT_THROW(numeric_drift({1.0}, {}), flock::Error);
  EXPECT_THROW(numeric_drift({1.0, NAN}, {1.0}), flock::Error);
  EXPECT_THROW(categorical_drift({}, {"a"}), flock::Error);
}

TEST(MonitorFairness, ClassificationByHand) {
  // Group 0: y = 1 1 0 0, pred = 1 0 1 0 ; group 1: y = 0 0, pred = 1 0 (no positives).
  const auto f = classification_fairness({0, 0, 0, 0, 1, 1}, 2, {1, 1, 0, 0, 0, 0}, {1, 0, 1, 0, 1, 0});
  EXPECT_DOUBLE_EQ(f.groups[0].selection_rate, 0.5);
  EXPECT_DOUBLE_EQ(*f.groups[0].true_positive_rate, 0.5);
  EXPECT_DOUBLE_EQ(*f.groups[0].false_positive_rate, 0.5);
  EXPECT_DOUBLE_EQ(*f.groups[0].precision, 0.5);
  EXPECT_DOUBLE_EQ(f.groups[0].accuracy, 0.5);
  EXPECT_FALSE(f.groups[1].true_positive_rate.has_value());
  EXPECT_DOUBLE_EQ(*f.groups[1].false_positive_rate, 0.5);
  EXPECT_DOUBLE_EQ(*f.groups[1].precision, 0.0);
  EXPECT_DOUBLE_EQ(f.demographic_parity_difference, 0.0);
  EXPECT_DOUBLE_EQ(*f.demographic_parity_ratio, 1.0);
  EXPECT_DOUBLE_EQ(*f.true_positive_rate_difference, 0.0);  // one group defines it
  EXPECT_DOUBLE_EQ(*f.equalized_odds_difference, 0.0);
  EXPECT_EQ(f.overall.count, 6);
}

TEST(MonitorFairness, RegressionByHand) {
  const auto f = regression_fairness({0, 0, 1}, 2, {1, 2, 3}, {2, 2, 1});
  EXPECT_DOUBLE_EQ(f.groups[0].mae, 0.5);
  EXPECT_DOUBLE_EQ(f.groups[0].rmse, std::sqrt(0.5));
  EXPECT_DOUBLE_EQ(f.groups[1].mean_error, -2);
  EXPECT_DOUBLE_EQ(f.mae_difference, 1.5);
  EXPECT_DOUBLE_EQ(*f.mae_ratio, 0.25);
  EXPECT_THROW(regression_fairness({0, 0}, 2, {1, 2}, {1, 2}), flock::Error);  // group 1 empty
}

TEST(MonitorFairness, RatiosAreSmallestOverLargest) {
  // Group 0: TPR 1/2, FPR 1/2; group 1: TPR 1, FPR 0.
  const auto f = classification_fairness({0, 0, 0, 0, 1, 1}, 2, {1, 1, 0, 0, 1, 0}, {1, 0, 1, 0, 1, 0});
  EXPECT_DOUBLE_EQ(*f.true_positive_rate_ratio, 0.5);
  EXPECT_DOUBLE_EQ(*f.false_positive_rate_ratio, 0.0);
  EXPECT_DOUBLE_EQ(*f.equalized_odds_ratio, 0.0);
  EXPECT_DOUBLE_EQ(*f.equal_opportunity_ratio, 0.5);
  const auto none = classification_fairness({0, 1}, 2, {0, 0}, {0, 0});  // no positives, no predictions
  EXPECT_FALSE(none.true_positive_rate_ratio.has_value());
  EXPECT_FALSE(none.false_positive_rate_ratio.has_value());  // both FPRs are 0
  EXPECT_FALSE(none.demographic_parity_ratio.has_value());
}
