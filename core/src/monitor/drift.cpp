// Drift statistics: PSI, the two-sample Kolmogorov-Smirnov test, chi-squared (flock/monitor.hpp).
#include <algorithm>
#include <boost/math/distributions/chi_squared.hpp>
#include <cmath>
#include <map>
#include <numeric>

#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/monitor.hpp"

namespace flock::monitor {

namespace {

void require_values(size_t baseline, size_t current) {
  if (baseline == 0)
    fail(ErrorCode::InvalidInput, "the baseline sample has no values",
         "Drift needs at least one baseline value.");
  if (current == 0)
    fail(ErrorCode::InvalidInput, "the current sample has no values",
         "Drift needs at least one current value.");
}

// numpy's _lerp: exact at both ends, and the same rounding as np.quantile.
double lerp(double a, double b, double t) {
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

}  // namespace

std::vector<double> psi_cut_points(const std::vector<double>& sorted) {
  std::vector<double> cuts;
  if (sorted.empty()) return cuts;
  const double n = double(sorted.size());
  for (int k = 1; k < kPsiBins; ++k) {
    const double level = double(k) / double(kPsiBins);
    const double virtual_index = (n - 1) * level;
    const double below = std::floor(virtual_index);
    const size_t lo = size_t(below);
    const size_t hi = std::min(lo + 1, sorted.size() - 1);
    cuts.push_back(lerp(sorted[lo], sorted[hi], virtual_index - below));
  }
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

double psi(const std::vector<double>& baseline_counts, const std::vector<double>& current_counts) {
  const double nb = std::accumulate(baseline_counts.begin(), baseline_counts.end(), 0.0);
  const double nc = std::accumulate(current_counts.begin(), current_counts.end(), 0.0);
  require_values(size_t(nb), size_t(nc));
  double total = 0;
  for (size_t i = 0; i < baseline_counts.size(); ++i) {
    const double p = std::max(baseline_counts[i] / nb, kPsiEpsilon);
    const double q = std::max(current_counts[i] / nc, kPsiEpsilon);
    total += (q - p) * std::log(q / p);
  }
  return total;
}

// Pr(D_{n,n} >= h/n) for equal sample sizes, as scipy's _compute_prob_outside_square does:
// 2 sum_k (-1)^(k-1) C(2n, n-kh) / C(2n, n), each ratio a product of h k simple factors and the
// alternating sum in Horner form P = 2 A0 (1 - A1 (1 - A2 (...))) against cancellation.
double ks_exact_pvalue_equal_sizes(int64_t n, int64_t h) {
  double total = 0.0;
  for (int64_t k = n / h; k >= 0; --k) {
    if (k % 64 == 0) poll_interrupt();
    double ratio = 1.0;
    for (int64_t j = 0; j < h; ++j) ratio = double(n - k * h - j) * ratio / double(n + k * h + j + 1);
    total = ratio * (1.0 - total);
  }
  return 2 * total;
}

// The lattice-path recursion of Hodges (1958) for 1 - P(inside), as Viehmann (arXiv:2102.08037)
// and scipy's _compute_outer_prob_inside_method do: b(x, y) is the probability that a random path
// from (0, 0) to (x, y) has left the band |x n/g - y m/g| < h, so it stays in [0, 1] and small
// p-values keep their precision.
double ks_exact_pvalue(int64_t m, int64_t n, int64_t h) {
  if (h <= 0) return 1.0;
  if (m < n) std::swap(m, n);
  const int64_t g = std::gcd(m, n);
  const int64_t mg = m / g;
  const int64_t ng = n / g;
  auto inside = [&](int64_t x, int64_t y) { return int64_t(std::llabs(x * ng - y * mg)) < h; };
  std::vector<double> column(size_t(n) + 1);
  column[0] = 0;
  for (int64_t y = 1; y <= n; ++y) column[size_t(y)] = inside(0, y) ? column[size_t(y - 1)] : 1.0;
  const int64_t chunk = std::max<int64_t>(1, interrupt_chunk_rows(n + 1));
  for (int64_t x = 1; x <= m; ++x) {
    if (x % chunk == 0) poll_interrupt();
    column[0] = inside(x, 0) ? column[0] : 1.0;
    for (int64_t y = 1; y <= n; ++y) {
      double& cell = column[size_t(y)];
      cell = inside(x, y) ? (double(x) * cell + double(y) * column[size_t(y - 1)]) / double(x + y) : 1.0;
    }
  }
  return std::clamp(column[size_t(n)], 0.0, 1.0);
}

KsResult ks_2samp(std::vector<double> a, std::vector<double> b) {
  require_values(a.size(), b.size());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const int64_t m = int64_t(a.size());
  const int64_t n = int64_t(b.size());
  // The largest |F_a - F_b| over every value, as the integer |i n - j m| (over m n): ties move
  // both empirical distribution functions past the tied value at once. Alongside, the largest
  // F_a - F_b and F_b - F_a in floating point as scipy computes them (i/m - j/n), which is the
  // statistic its asymptotic branch uses.
  int64_t largest = 0;
  double above = -1, below = 1;
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    const double v = (j == b.size() || (i < a.size() && a[i] <= b[j])) ? a[i] : b[j];
    while (i < a.size() && a[i] == v) ++i;
    while (j < b.size() && b[j] == v) ++j;
    largest = std::max<int64_t>(largest, std::llabs(int64_t(i) * n - int64_t(j) * m));
    const double difference = double(i) / double(m) - double(j) / double(n);
    above = std::max(above, difference);
    below = std::min(below, difference);
  }
  // scipy 1.10.1 ks_2samp(method='auto', alternative='two-sided'): exact when the larger sample
  // has at most MAX_AUTO_N values, falling back to the asymptotic form when the exact
  // computation fails (a probability outside [0, 1]); the asymptotic p-value is
  // kstwo.sf(D, round(m n / (m + n))).
  const int64_t g = std::gcd(m, n);
  if (std::max(m, n) <= kKsExactMaxSize) {
    const int64_t h = largest / g;
    const double statistic = double(h) / (double(m / g) * double(n));
    if (h == 0) return {statistic, 1.0, true};
    const double p = m == n ? ks_exact_pvalue_equal_sizes(m, h) : ks_exact_pvalue(m, n, h);
    if (p >= 0 && p <= 1) return {statistic, p, true};
  }
  const double min_statistic = std::clamp(-below, 0.0, 1.0);
  const double statistic = min_statistic > above ? min_statistic : above;
  const double en = double(std::max(m, n)) * double(std::min(m, n)) / double(m + n);
  return {statistic, std::clamp(kolmogorov_n_sf(int64_t(std::nearbyint(en)), statistic), 0.0, 1.0), false};
}

NumericDrift numeric_drift(std::vector<double> baseline, std::vector<double> current) {
  require_values(baseline.size(), current.size());
  for (const auto* sample : {&baseline, &current})
    for (double v : *sample)
      if (!std::isfinite(v))
        fail(ErrorCode::InvalidInput, "drift: a value is not finite", "Leave out NaN and infinite values.");
  std::sort(baseline.begin(), baseline.end());
  std::sort(current.begin(), current.end());
  NumericDrift out;
  out.n_baseline = int64_t(baseline.size());
  out.n_current = int64_t(current.size());
  const std::vector<double> cuts = psi_cut_points(baseline);
  out.bins = int(cuts.size()) + 1;
  // Bin k holds (cuts[k-1], cuts[k]]: np.searchsorted(cuts, v, side='left').
  std::vector<double> baseline_counts(cuts.size() + 1), current_counts(cuts.size() + 1);
  for (double v : baseline)
    baseline_counts[size_t(std::lower_bound(cuts.begin(), cuts.end(), v) - cuts.begin())] += 1;
  for (double v : current)
    current_counts[size_t(std::lower_bound(cuts.begin(), cuts.end(), v) - cuts.begin())] += 1;
  out.psi = psi(baseline_counts, current_counts);
  const KsResult ks = ks_2samp(std::move(baseline), std::move(current));
  out.ks_statistic = ks.statistic;
  out.ks_pvalue = ks.pvalue;
  out.ks_exact = ks.exact;
  return out;
}

CategoricalDrift categorical_drift(const std::vector<std::string>& baseline,
                                   const std::vector<std::string>& current) {
  require_values(baseline.size(), current.size());
  std::map<std::string, std::pair<double, double>> counts;
  for (const auto& v : baseline) counts[v].first += 1;
  for (const auto& v : current) counts[v].second += 1;
  CategoricalDrift out;
  out.n_baseline = int64_t(baseline.size());
  out.n_current = int64_t(current.size());
  out.categories = int(counts.size());
  std::vector<double> b, c;
  for (const auto& [category, pair] : counts) {
    b.push_back(pair.first);
    c.push_back(pair.second);
  }
  out.psi = psi(b, c);
  // Pearson's chi-squared on the 2 x k table (scipy.stats.chi2_contingency, correction=False).
  const double nb = double(baseline.size()), nc = double(current.size()), total = nb + nc;
  double chi2 = 0;
  for (size_t k = 0; k < b.size(); ++k) {
    const double column = b[k] + c[k];
    const double eb = nb * column / total, ec = nc * column / total;
    chi2 += (b[k] - eb) * (b[k] - eb) / eb + (c[k] - ec) * (c[k] - ec) / ec;
  }
  out.chi2_dof = int64_t(counts.size()) - 1;
  if (out.chi2_dof == 0) {
    out.chi2 = 0;  // one category in both samples: no evidence of a change (as scipy: 0, p = 1)
    out.chi2_pvalue = 1;
    return out;
  }
  out.chi2 = chi2;
  out.chi2_pvalue =
      boost::math::cdf(boost::math::complement(boost::math::chi_squared(double(out.chi2_dof)), chi2));
  return out;
}

}  // namespace flock::monitor
