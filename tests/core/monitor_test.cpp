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

TEST(MonitorKs, EqualSizesHornerFormMatchesClosedForm) {
  for (int n : {5, 40, 300})
    for (int h = 1; h <= n; h += std::max(1, n / 7))
      EXPECT_NEAR(ks_exact_pvalue_equal_sizes(n, h), equal_sizes_pvalue(n, h), 1e-12) << n << " " << h;
}

// kstwo.sf switches algorithm at n x^2 = 0.754693 and 4 (n <= 140), 2.2, and n x^1.5 = 1.4
// (n > 140): two independent methods meet at each switch, so the survival function must be
// continuous there, to the accuracy Simard & L'Ecuyer (2011) give: exact methods agree to 1e-9
// here; doubling Smirnov's one-sided sum leaves out a term of relative size below 1e-6 at
// n x^2 = 2.2, and Pelz-Good's expansion is good to about 4 to 5 digits next to n = 140.
TEST(MonitorKs, FiniteNDistributionContinuousWhereItsAlgorithmsMeet) {
  auto meet = [](int64_t n, double x, double relative) {
    const double below = kolmogorov_n_sf(n, x * (1 - 1e-13)), above = kolmogorov_n_sf(n, x * (1 + 1e-13));
    EXPECT_NEAR(below, above, relative * below) << n << " " << x;
  };
  for (int64_t n : {10, 50, 140}) {
    meet(n, std::sqrt(0.754693 / double(n)), 1e-9);  // Durbin's matrix | Pomeranz
    if (std::sqrt(4.0 / double(n)) < 0.5) meet(n, std::sqrt(4.0 / double(n)), 1e-9);  // Pomeranz | Smirnov
  }
  for (int64_t n : {141, 1000, 12000, 99999}) {
    meet(n, std::sqrt(2.2 / double(n)), n < 1000 ? 1e-4 : 3e-6);  // Durbin's matrix or Pelz-Good | Smirnov
    meet(n, std::pow(1.4 / double(n), 2.0 / 3), 1e-5);            // Durbin's matrix | Pelz-Good
  }
  meet(200000, std::sqrt(2.2 / 200000.0), 3e-6);   // Pelz-Good | Smirnov
  for (int64_t n : {20, 500}) meet(n, 0.5, 1e-9);  // Smirnov's sum on both sides
}

TEST(MonitorKs, FiniteNDistributionClosedForms) {
  // n = 1: D_1 = max(U, 1 - U), so P(D_1 >= x) = 2 (1 - x) on [1/2, 1].
  for (double x : {0.5, 0.6, 0.99}) EXPECT_NEAR(kolmogorov_n_sf(1, x), 2 * (1 - x), 1e-15);
  // Below 1/(2n) the statistic always exceeds x; at and beyond 1 never.
  EXPECT_EQ(kolmogorov_n_sf(30, 0.5 / 30), 1.0);
  EXPECT_EQ(kolmogorov_n_sf(30, 1.0), 0.0);
  // For x >= 1/2 the two one-sided events are disjoint: P(D_n >= x) = 2 P(D+_n >= x), and just
  // below 1 - 1/n it meets Ruben-Gambino's 2 (1 - x)^n.
  for (int64_t n : {7, 60, 3000}) {
    const double x = 1 - 1.0 / double(n);
    EXPECT_NEAR(kolmogorov_n_sf(n, x * (1 - 1e-14)), 2 * std::pow(1 - x, double(n)),
                1e-9 * 2 * std::pow(1 - x, double(n)))
        << n;
  }
  // Large n: close to Kolmogorov's limit Q(sqrt(n) x), within the O(1/sqrt(n)) correction.
  auto limit = [](double z) {
    double sum = 0;
    for (int k = 1; k <= 100; ++k) sum += (k % 2 ? 2.0 : -2.0) * std::exp(-2.0 * k * k * z * z);
    return sum;
  };
  for (double z : {0.6, 1.0, 1.36, 2.0}) {
    const int64_t n = 1000000;
    EXPECT_NEAR(kolmogorov_n_sf(n, z / std::sqrt(double(n))), limit(z), 3e-3 * limit(z)) << z;
  }
}

TEST(MonitorKs, AsymptoticBeyondTenThousandValues) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> value(0, 999);  // ties
  std::vector<double> a(20000), b(10001);
  for (double& v : a) v = value(rng);
  for (double& v : b) v = value(rng) + (value(rng) < 40 ? 3 : 0);
  const KsResult r = ks_2samp(a, b);
  EXPECT_FALSE(r.exact);
  const double en = 20000.0 * 10001.0 / 30001.0;
  EXPECT_DOUBLE_EQ(r.pvalue, kolmogorov_n_sf(int64_t(std::nearbyint(en)), r.statistic));
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
