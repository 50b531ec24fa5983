// The one-sample two-sided Kolmogorov-Smirnov distribution for finite n (flock/monitor.hpp):
// a port of scipy 1.10.1's scipy.stats.kstwo.sf, i.e. scipy/stats/_ksstats.py `_kolmogn(n, x,
// cdf=False)` and the one-sided scipy.special.smirnov it calls (scipy/special/cephes/kolmogorov.c),
// so that ks_2samp's asymptotic p-value, kstwo.sf(D, round(en)), is the number scipy gives.
//
// Which algorithm serves which (n, x) is Simard & L'Ecuyer's choice (J. Stat. Softw. 39(11), 2011)
// as _kolmogn makes it: Ruben-Gambino closed forms at both ends, 2 x Smirnov's one-sided exact sum
// for x >= 0.5 and in the upper tail, Durbin's matrix method (Marsaglia, Tsang & Wang, J. Stat.
// Softw. 8(18), 2003) and Pomeranz's recursion (CACM 17(12), 1974) for small n x^2, and the
// Pelz-Good expansion (JRSS B 38(2), 1976) for large n. Boost.Math has only the limiting
// (n -> infinity) distribution, which is what this replaces.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "flock/interrupt.hpp"
#include "flock/monitor.hpp"

namespace flock::monitor {

namespace {

constexpr double kPi = 3.14159265358979323846;
const double kSqrt2Pi = std::sqrt(2 * kPi);
const double kLog2Pi = std::log(2 * kPi);
const double kSqrt3 = std::sqrt(3.0);
const double kPiSquared = std::pow(kPi, 2);
const double kPiFour = std::pow(kPi, 4);
const double kPiSix = std::pow(kPi, 6);
constexpr double kMinLog = -708;                             // _ksstats._MIN_LOG
constexpr double kCephesMinLog = -7.08396418532264106224e2;  // cephes MINLOG: log(2^-1022)
const double kScaleUp = std::ldexp(1.0, 128);                // _EP128
const double kScaleDown = std::ldexp(1.0, -128);             // _EM128
constexpr int64_t kSmirnovMaxComputeN = 1000000;             // cephes SMIRNOV_MAX_COMPUTE_N

double clip_probability(double p) { return std::clamp(p, 0.0, 1.0); }

// log(n! / n^n) by Stirling's series (_ksstats._log_nfactorial_div_n_pow_n).
double log_nfactorial_div_n_pow_n(double n) {
  static constexpr double kStirling[] = {-2.955065359477124183e-2,  6.4102564102564102564e-3,
                                         -1.9175269175269175269e-3, 8.4175084175084175084e-4,
                                         -5.952380952380952381e-4,  7.9365079365079365079e-4,
                                         -2.7777777777777777778e-3, 8.3333333333333333333e-2};
  const double rn = 1.0 / n;
  double series = 0;  // np.polyval: Horner, highest power first
  for (double c : kStirling) series = series * (rn / n) + c;
  return std::log(n) / 2 - n + kLog2Pi / 2 + rn * series;
}

// Smirnov's one-sided survival function P(D+_n >= x), the Birnbaum-Tingey / Smirnov sum
//   x sum_{v=0}^{v < n(1-x)} C(n, v) (x + v/n)^(v-1) (1 - x - v/n)^(n-v)
// with cephes' special cases. Cephes evaluates the terms in double-double; here they are
// evaluated as logarithms in long double, which keeps the same ~1e-15 relative accuracy. Only the
// lower sum is used: kolmogn calls smirnov with x >= 0.5 or n x^2 >= 2.2, where cephes' choice
// of the upper sum (x <= 0.5 / sqrt(n)) never applies.
double smirnov_sf(int64_t n, double x) {
  if (!(n > 0 && x >= 0.0 && x <= 1.0)) return std::nan("");
  if (n == 1) return 1 - x;
  if (x == 0.0) return 1.0;
  if (x == 1.0) return 0.0;
  // floor(n x) and its fraction exactly (cephes modNX), from the product's error term.
  const double nx = double(n) * x;
  const double nx_error = std::fma(double(n), x, -nx);
  double nx_floor = std::floor(nx);
  if (nx_floor == nx && nx_error < 0) nx_floor -= 1;
  double alpha = (nx - nx_floor) + nx_error;
  if (alpha >= 1) {
    nx_floor += 1;
    alpha = 0;
  }
  const int64_t nxfl = int64_t(nx_floor);
  if (nxfl == 0 || (nxfl == 1 && alpha == 0)) return clip_probability(1 - x * std::pow(1 + x, double(n - 1)));
  if (-2 * double(n) * x * x < kCephesMinLog) return 0.0;
  if (nxfl >= n - 1) return clip_probability(std::pow(1 - x, double(n)));
  if (n > kSmirnovMaxComputeN) {
    const double logp = -std::pow(6.0 * double(n) * x + 1, 2) / 18.0 / double(n);
    return clip_probability(logp < -std::log(2.0) ? std::exp(logp) : 1 + std::expm1(logp));
  }
  // Terms v = 0 .. last, where x + v/n < 1 strictly (alpha = 0 leaves the boundary term out).
  const int64_t last = n - nxfl - 1;
  const long double ln = (long double)n;
  const long double log_n_factorial = std::lgamma(ln + 1);
  long double sum = 0;
  const int64_t chunk = 4096;
  for (int64_t v = 0; v <= last; ++v) {
    if (v % chunk == chunk - 1) poll_interrupt();
    const long double up = ((long double)(nxfl + v) + alpha) / ln;        // x + v/n
    const long double down = ((long double)(n - nxfl - v) - alpha) / ln;  // 1 - x - v/n
    if (!(down > 0)) break;
    const long double log_term = log_n_factorial - std::lgamma((long double)(v + 1)) -
                                 std::lgamma((long double)(n - v + 1)) + (long double)(v - 1) * std::log(up) +
                                 (long double)(n - v) * std::log(down);
    const long double term = std::exp(log_term);
    sum += term;
    // cephes' early stop: the remaining terms (fewer than last - v, each smaller) cannot matter.
    if (v > 0 && v != last && 4 * (long double)(last + 1 - v) * term < 2.220446049250313e-16L * sum) break;
  }
  return clip_probability(double((long double)x * sum));
}

// Durbin's matrix: P(D_n <= d) as the (k, k) entry of H^n n!/n^n, with scaling by 2^128 kept in an
// exponent (_ksstats._kolmogn_DMTW). The matrix is 2k-1 square, k = ceil(n d); the callers keep
// n d below about 60.
double durbin_matrix_cdf(int64_t n, double d) {
  if (d >= 1.0) return 1.0;
  const double nd = double(n) * d;
  if (nd <= 0.5) return 0.0;
  const int k = int(std::ceil(nd));
  const double h = k - nd;
  const int m = 2 * k - 1;
  using Matrix = std::vector<double>;  // row-major m x m
  auto at = [m](Matrix& a, int r, int c) -> double& { return a[size_t(r) * size_t(m) + size_t(c)]; };
  Matrix H(size_t(m) * size_t(m), 0.0);
  std::vector<double> v(static_cast<size_t>(m)), w(static_cast<size_t>(m));
  double fac = 1.0;
  for (int j = 1; j <= m; ++j) {
    v[size_t(j - 1)] = 1.0 - std::pow(h, j);
    w[size_t(j - 1)] = fac;
    fac /= j;
    v[size_t(j - 1)] *= fac;
  }
  const double tt = std::pow(std::max(2 * h - 1.0, 0.0), m) - 2 * std::pow(h, m);
  v[size_t(m - 1)] = (1.0 + tt) * fac;
  for (int i = 1; i < m; ++i)
    for (int r = i - 1; r < m; ++r) at(H, r, i) = w[size_t(r - (i - 1))];
  for (int r = 0; r < m; ++r) at(H, r, 0) = v[size_t(r)];
  for (int c = 0; c < m; ++c) at(H, m - 1, c) = v[size_t(m - 1 - c)];

  auto multiply = [&](const Matrix& a, const Matrix& b) {
    Matrix out(a.size(), 0.0);
    for (int r = 0; r < m; ++r)
      for (int t = 0; t < m; ++t) {
        const double a_rt = a[size_t(r) * size_t(m) + size_t(t)];
        for (int c = 0; c < m; ++c)
          out[size_t(r) * size_t(m) + size_t(c)] += a_rt * b[size_t(t) * size_t(m) + size_t(c)];
      }
    return out;
  };
  Matrix power(size_t(m) * size_t(m), 0.0);
  for (int r = 0; r < m; ++r) at(power, r, r) = 1.0;
  int64_t remaining = n;
  int64_t exponent = 0, h_exponent = 0;
  while (remaining > 0) {
    poll_interrupt();
    if (remaining % 2) {
      power = multiply(power, H);
      exponent += h_exponent;
    }
    H = multiply(H, H);
    h_exponent *= 2;
    if (std::fabs(at(H, k - 1, k - 1)) > kScaleUp) {
      for (double& e : H) e /= kScaleUp;
      h_exponent += 128;
    }
    remaining /= 2;
  }
  double p = at(power, k - 1, k - 1);
  for (int64_t i = 1; i <= n; ++i) {
    p = double(i) * p / double(n);
    if (std::fabs(p) < kScaleDown) {
      p *= kScaleUp;
      exponent -= 128;
    }
  }
  if (exponent != 0) p = std::ldexp(p, int(exponent));
  return clip_probability(p);
}

// The interval of row i in Pomeranz's recursion (_ksstats._pomeranz_compute_j1j2).
std::pair<int64_t, int64_t> pomeranz_interval(int64_t i, int64_t n, int64_t ll, int ceilf, int roundf) {
  int64_t j1, j2;
  if (i == 0) {
    j1 = -ll - ceilf - 1;
    j2 = ll + ceilf - 1;
  } else {
    const int64_t half = (i + 1) / 2;
    if ((i + 1) % 2 == 0) {  // i odd
      if (half == n + 1) {
        j1 = n - ll - ceilf - 1;
        j2 = n + ll + ceilf - 1;
      } else {
        j1 = half - 1 - ll - roundf - 1;
        j2 = half + ll - 1 + ceilf - 1;
      }
    } else {
      j1 = half - 1 - ll - 1;
      j2 = half + ll + roundf - 1;
    }
  }
  return {std::max<int64_t>(j1 + 2, 0), std::min(j2, n)};
}

// Pomeranz's recursion for P(D_n <= x), n <= 140 (_ksstats._kolmogn_Pomeranz).
double pomeranz_cdf(int64_t n, double x) {
  const double t = double(n) * x;
  const int64_t ll = int64_t(std::floor(t));
  const double f = t - double(ll);
  const double g = std::min(f, 1.0 - f);
  const int ceilf = f > 0 ? 1 : 0;
  const int roundf = f > 0.5 ? 1 : 0;
  const int64_t npwrs = 2 * (ll + 1);
  std::vector<double> gpower(static_cast<size_t>(npwrs)), twogpower(static_cast<size_t>(npwrs)),
      onem2gpower(static_cast<size_t>(npwrs));
  gpower[0] = twogpower[0] = onem2gpower[0] = 1.0;
  const double g_over_n = g / double(n), two_g_over_n = 2 * g / double(n),
               one_minus_two_g_over_n = (1 - 2 * g) / double(n);
  for (int64_t m = 1; m < npwrs; ++m) {
    gpower[size_t(m)] = gpower[size_t(m - 1)] * g_over_n / double(m);
    twogpower[size_t(m)] = twogpower[size_t(m - 1)] * two_g_over_n / double(m);
    onem2gpower[size_t(m)] = onem2gpower[size_t(m - 1)] * one_minus_two_g_over_n / double(m);
  }
  std::vector<double> V0(static_cast<size_t>(npwrs), 0.0), V1(static_cast<size_t>(npwrs), 0.0);
  V1[0] = 1;
  int64_t V0s = 0, V1s = 0;  // the column index each row starts at
  int64_t expnt = 0;
  auto [j1, j2] = pomeranz_interval(0, n, ll, ceilf, roundf);
  for (int64_t i = 1; i < 2 * n + 2; ++i) {
    const int64_t k1 = j1;
    std::swap(V0, V1);
    std::swap(V0s, V1s);
    std::fill(V1.begin(), V1.end(), 0.0);
    std::tie(j1, j2) = pomeranz_interval(i, n, ll, ceilf, roundf);
    const std::vector<double>& pwrs = (i == 1 || i == 2 * n + 1) ? gpower : (i % 2 ? twogpower : onem2gpower);
    const int64_t ln2 = j2 - k1 + 1;
    if (ln2 <= 0) continue;
    // np.convolve(V0[k1 - V0s : k1 - V0s + ln2], pwrs[:ln2]) (full), entries j1 - k1 .. j2 - k1.
    const int64_t start = k1 - V0s;
    const int64_t a_len = std::max<int64_t>(0, std::min(start + ln2, npwrs) - std::max<int64_t>(start, 0));
    const int64_t b_len = std::min(ln2, npwrs);
    const int64_t conv_start = j1 - k1;
    const int64_t conv_len = std::min(j2 - j1 + 1, npwrs);
    for (int64_t out = 0; out < conv_len; ++out) {
      const int64_t c = conv_start + out;
      double s = 0;
      for (int64_t a = std::max<int64_t>(0, c - b_len + 1); a <= std::min(c, a_len - 1); ++a)
        s += V0[size_t(std::max<int64_t>(start, 0) + a)] * pwrs[size_t(c - a)];
      V1[size_t(out)] = s;
    }
    const double largest = *std::max_element(V1.begin(), V1.end());
    if (0 < largest && largest < kScaleDown) {
      for (double& e : V1) e *= kScaleUp;
      expnt -= 128;
    }
    V1s = V0s + j1 - k1;
  }
  const int64_t at = n - V1s;
  double ans = (at >= 0 && at < npwrs) ? V1[size_t(at)] : 0.0;
  for (int64_t m = 1; m <= n; ++m) {
    if (std::fabs(ans) > kScaleUp) {
      ans *= kScaleDown;
      expnt += 128;
    }
    ans *= double(m);
  }
  if (expnt != 0) ans = std::ldexp(ans, int(expnt));
  return clip_probability(ans);
}

// The Pelz-Good expansion of P(D_n <= x) (_ksstats._kolmogn_PelzGood), not clipped.
double pelz_good_cdf(int64_t n, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double z = std::sqrt(double(n)) * x;
  const double zsquared = std::pow(z, 2), zthree = std::pow(z, 3), zfour = std::pow(z, 4),
               zsix = std::pow(z, 6);
  const double qlog = -kPiSquared / 8 / zsquared;
  if (qlog < kMinLog) return 0.0;
  double q = std::exp(qlog);
  const double k1a = -zsquared;
  const double k1b = kPiSquared / 4;
  const double k2a = 6 * zsix + 2 * zfour;
  const double k2b = (2 * zfour - 5 * zsquared) * kPiSquared / 4;
  const double k2c = kPiFour * (1 - 2 * zsquared) / 16;
  const double k3d = kPiSix * (5 - 30 * zsquared) / 64;
  const double k3c = kPiFour * (-60 * zsquared + 212 * zfour) / 16;
  const double k3b = kPiSquared * (135 * zfour - 96 * zsix) / 4;
  const double k3a = -30 * zsix - 90 * std::pow(z, 8);
  double K[4] = {0, 0, 0, 0};
  const int64_t maxk = int64_t(std::ceil(16 * z / kPi));
  for (int64_t k = maxk; k > 0; --k) {
    const double m = double(2 * k - 1);
    const double msquared = std::pow(m, 2), mfour = std::pow(m, 4), msix = std::pow(m, 6);
    const double qpower = std::pow(q, double(8 * k));
    const double coeffs[4] = {1.0, k1a + k1b * msquared, k2a + k2b * msquared + k2c * mfour,
                              k3a + k3b * msquared + k3c * mfour + k3d * msix};
    for (int i = 0; i < 4; ++i) K[i] = K[i] * qpower + coeffs[i];
  }
  const double divisors[4] = {z, 6 * zfour, 72 * std::pow(z, 7), 6480 * std::pow(z, 10)};
  for (int i = 0; i < 4; ++i) K[i] = K[i] * q * kSqrt2Pi / divisors[i];
  q = std::exp(-kPiSquared / 2 / zsquared);
  const double sqrt3z = kSqrt3 * z;
  double k2extra = 0, k3extra = 0;
  for (int64_t k = maxk; k > 0; --k) {
    const double ksquared = double(k) * double(k);
    const double kspi = kPi * double(k);
    const double qpwer = std::pow(q, ksquared);
    k2extra += ksquared * qpwer;
    k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer;
  }
  K[2] += k2extra * (kPiSquared * kSqrt2Pi / (-36 * zthree));
  K[3] += k3extra * (kPiSquared * kSqrt2Pi / (216 * zsix));
  double sum = 0;
  for (int i = 0; i < 4; ++i) sum += K[i] / std::pow(double(n), i / 2.0);
  return sum;
}

}  // namespace

double kolmogorov_n_sf(int64_t n, double x) {
  if (n <= 0 || std::isnan(x)) return std::nan("");
  if (x >= 1.0) return 0.0;
  if (x <= 0.0) return 1.0;
  const double dn = double(n);
  const double t = dn * x;
  if (t <= 1.0) {  // Ruben-Gambino: 1/(2n) <= x <= 1/n
    if (t <= 0.5) return 1.0;
    double cdf;
    if (n <= 140) {
      cdf = 1.0;
      for (int64_t i = 1; i <= n; ++i) cdf *= double(i) * (1.0 / dn) * (2 * t - 1);
    } else {
      cdf = std::exp(log_nfactorial_div_n_pow_n(dn) + dn * std::log(2 * t - 1));
    }
    return clip_probability(1.0 - cdf);
  }
  if (t >= dn - 1) return clip_probability(2 * std::pow(1.0 - x, dn));  // Ruben-Gambino
  if (x >= 0.5) return clip_probability(2 * smirnov_sf(n, x));
  const double nxsquared = t * x;
  if (n <= 140) {
    if (nxsquared <= 0.754693) return clip_probability(1.0 - durbin_matrix_cdf(n, x));
    if (nxsquared <= 4) return clip_probability(1.0 - pomeranz_cdf(n, x));
    return clip_probability(2 * smirnov_sf(n, x));
  }
  if (nxsquared >= 370.0) return 0.0;
  if (nxsquared >= 2.2) return clip_probability(2 * smirnov_sf(n, x));
  const double cdf =
      (n <= 100000 && dn * std::pow(x, 1.5) <= 1.4) ? durbin_matrix_cdf(n, x) : pelz_good_cdf(n, x);
  return clip_probability(1.0 - clip_probability(cdf));
}

}  // namespace flock::monitor
