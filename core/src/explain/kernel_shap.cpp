// KernelSHAP (Lundberg & Lee 2017, section 4.1): Shapley values of v(S) = mean over background rows
// b of f(x on S, b elsewhere), found as the weighted least-squares fit of v over coalitions S with
// the Shapley kernel weights (F - 1) / (C(F, |S|) |S| (F - |S|)), under the constraint that the values
// sum to v(all) - v(none) (substituted out, so additivity is exact by construction). With every
// coalition enumerated the fit is exact; otherwise coalitions are sampled with the kernel's
// distribution over sizes, each with its complement (paired sampling), from a seeded generator.
// Sampled values come with standard errors: the fit is x = A^-1 b with A and b sums over independent
// pairs, so to first order x - x* = A^-1 sum_p u_p with u_p the pair's a_z e_z + a_z' e_z' (e the
// residuals), and Cov(x) ~ A^-1 (sum_p u_p u_p^T) A^-1 (the sandwich estimator, as in Covert & Lee
// 2021, "Improving KernelSHAP"), scaled by P / (P - (F - 1)) for the fitted parameters.
// "Features" are the model's input columns over all its inputs, of any type (strings too).
#include "kernel_shap.hpp"

#include <fmt/format.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>

#include "flock/checked.hpp"
#include "flock/error.hpp"
#include "flock/interrupt.hpp"

namespace flock::explain {
namespace {

// Copies value `col` of row `row` of `from` into row `to_row` of `to` (same type and width).
void copy_value(const Tensor& from, int64_t row, int64_t width, int64_t col, Tensor& to, int64_t to_row) {
  const size_t src = static_cast<size_t>(row * width + col), dst = static_cast<size_t>(to_row * width + col);
  switch (from.type) {
    case ElemType::Float:
      to.f[dst] = from.f[src];
      break;
    case ElemType::Double:
      to.d[dst] = from.d[src];
      break;
    case ElemType::Int64:
      to.i[dst] = from.i[src];
      break;
    case ElemType::String:
      to.s[dst] = from.s[src];
      break;
    case ElemType::Bool:
      to.b[dst] = from.b[src];
      break;
  }
}

}  // namespace

Explanation kernel_shap(const Model& model, const FeatureBatch& batch, const Options& options) {
  if (options.interactions)
    fail(ErrorCode::UnsupportedOperator, "KernelSHAP gives no interaction values",
         "Call without interactions => true.");
  const FeatureBatch& bg_all = *options.background;
  const Signature& sig = model.signature();
  if (batch.inputs.size() != sig.inputs.size() || bg_all.inputs.size() != sig.inputs.size())
    fail(ErrorCode::InvalidInput, "the batch or the background does not have the model's inputs");
  if (bg_all.rows == 0) fail(ErrorCode::InvalidInput, "the background has no rows");
  // Features: (input, column) pairs in input order.
  std::vector<std::pair<size_t, int64_t>> features;
  std::vector<int64_t> widths;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    const int64_t w = batch.inputs[k].shape.size() == 2 ? batch.inputs[k].shape[1] : -1;
    if (w < 1 || bg_all.inputs[k].shape.size() != 2 || bg_all.inputs[k].shape[1] != w)
      fail(ErrorCode::InvalidInput,
           fmt::format("input '{}' is not a [rows, columns] table", sig.inputs[k].name));
    widths.push_back(w);
    for (int64_t j = 0; j < w; ++j) features.emplace_back(k, j);
  }
  const int64_t F = static_cast<int64_t>(features.size());
  if (F > 4096) fail(ErrorCode::LimitExceeded, fmt::format("KernelSHAP over {} features is too costly", F));

  // The background: at most kernel_background_rows rows, evenly spaced.
  const int64_t B = std::max<int64_t>(1, std::min(bg_all.rows, options.kernel_background_rows));
  std::vector<int64_t> bg_rows(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) bg_rows[static_cast<size_t>(b)] = b * bg_all.rows / B;

  // Coalitions (rows of F bits, none and all excluded) and their regression weights.
  std::vector<std::vector<uint8_t>> coalitions;
  std::vector<double> weights;
  auto kernel_weight = [&](int64_t s) {
    // (F - 1) / (C(F, s) s (F - s)), via logs for large F.
    const double log_c = std::lgamma(F + 1.0) - std::lgamma(s + 1.0) - std::lgamma(F - s + 1.0);
    return (F - 1.0) / (std::exp(log_c) * s * (F - s));
  };
  const int64_t samples = std::clamp<int64_t>(options.kernel_samples, 2, kMaxKernelSamples);
  const bool enumerate = F <= 30 && ((int64_t(1) << F) - 2) <= samples;
  if (F >= 2 && enumerate) {
    for (int64_t m = 1; m + 1 < (int64_t(1) << F); ++m) {
      std::vector<uint8_t> z(static_cast<size_t>(F));
      for (int64_t i = 0; i < F; ++i) z[static_cast<size_t>(i)] = (m >> i) & 1;
      const int64_t s = __builtin_popcountll(static_cast<unsigned long long>(m));
      coalitions.push_back(std::move(z));
      weights.push_back(kernel_weight(s));
    }
  } else if (F >= 2) {
    std::mt19937_64 rng(options.seed);
    std::vector<double> size_weight;
    for (int64_t s = 1; s < F; ++s) size_weight.push_back((F - 1.0) / (static_cast<double>(s) * (F - s)));
    std::discrete_distribution<int64_t> size_of(size_weight.begin(), size_weight.end());
    std::vector<int64_t> order(static_cast<size_t>(F));
    for (int64_t i = 0; i < F; ++i) order[static_cast<size_t>(i)] = i;
    const int64_t pairs = std::max<int64_t>(1, samples / 2);
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t s = size_of(rng) + 1;
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<uint8_t> z(static_cast<size_t>(F), 0);
      for (int64_t i = 0; i < s; ++i) z[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
      std::vector<uint8_t> complement(z);
      for (auto& bit : complement) bit = !bit;
      coalitions.push_back(std::move(z));
      coalitions.push_back(std::move(complement));
      weights.push_back(1.0);
      weights.push_back(1.0);
    }
  }
  const int64_t M = static_cast<int64_t>(coalitions.size());
  // Model runs per explained row: (M + 2) x B hybrid rows.
  const int64_t hybrid = checked_mul(M + 2, B, "KernelSHAP rows");
  constexpr int64_t kMaxHybridValues = int64_t(1) << 26;
  if (checked_mul(hybrid, F, "KernelSHAP values") > kMaxHybridValues)
    fail(ErrorCode::LimitExceeded,
         fmt::format("KernelSHAP would run the model on {} rows of {} features per explained row", hybrid, F),
         fmt::format("Use a background of at most {} rows for this model.",
                     std::max<int64_t>(1, kMaxHybridValues / ((M + 2) * F))));

  Explanation out;
  out.method = Method::KernelShap;
  out.rows = batch.rows;
  out.features = F;
  out.kernel_samples = M;
  // Sampled (paired: coalitions 2p and 2p + 1 are complements) with enough pairs to estimate the
  // spread: standard errors.
  const bool sampled = F >= 2 && !enumerate;
  const int64_t P = M / 2;
  const bool with_errors = sampled && P > F;
  const bool classifier = sig.task == Task::Classification;
  const int64_t S = F + 1;
  for (int64_t r = 0; r < batch.rows; ++r) {
    poll_interrupt();
    FeatureBatch h;
    h.rows = hybrid;
    for (size_t k = 0; k < sig.inputs.size(); ++k)
      h.inputs.emplace_back(batch.inputs[k].type, std::vector<int64_t>{hybrid, widths[k]});
    // Coalition index c: 0 = none (all background), 1 = all (the row), 2.. = coalitions[c - 2].
    for (int64_t c = 0; c < M + 2; ++c) {
      for (int64_t b = 0; b < B; ++b) {
        const int64_t row = c * B + b;
        for (int64_t i = 0; i < F; ++i) {
          const auto [k, j] = features[static_cast<size_t>(i)];
          const bool from_x =
              c == 1 || (c >= 2 && coalitions[static_cast<size_t>(c - 2)][static_cast<size_t>(i)]);
          if (from_x)
            copy_value(batch.inputs[k], r, widths[k], j, h.inputs[k], row);
          else
            copy_value(bg_all.inputs[k], bg_rows[static_cast<size_t>(b)], widths[k], j, h.inputs[k], row);
        }
      }
    }
    const Prediction p = model.predict(h, classifier ? unsigned(kPredictProba) : unsigned(kPredictValues));
    const int64_t O = classifier ? p.n_classes : 1;
    if (O < 1) fail(ErrorCode::TypeMismatch, "the model gives no numeric output to explain");
    if (r == 0) {
      if (classifier) {
        out.outputs = sig.class_labels;
        out.outputs.resize(static_cast<size_t>(O));
        for (int64_t o = 0; o < O; ++o)
          if (out.outputs[static_cast<size_t>(o)].empty())
            out.outputs[static_cast<size_t>(o)] = std::to_string(o);
      } else {
        out.outputs = {"0"};
      }
      out.contributions.resize(
          static_cast<size_t>(checked_mul(checked_mul(batch.rows, O, "explanations"), S, "explanations")));
      if (with_errors) out.std_errors.resize(static_cast<size_t>(batch.rows * O * F));
    }
    for (int64_t o = 0; o < O; ++o) {
      // v(c) = mean over the background rows of the model's output o.
      Eigen::VectorXd v(M + 2);
      for (int64_t c = 0; c < M + 2; ++c) {
        double sum = 0;
        for (int64_t b = 0; b < B; ++b) {
          const size_t row = static_cast<size_t>(c * B + b);
          sum += classifier ? p.proba[row * static_cast<size_t>(O) + static_cast<size_t>(o)] : p.values[row];
        }
        v(c) = sum / static_cast<double>(B);
      }
      const double v0 = v(0), total = v(1) - v0;
      double* phi = out.contributions.data() + (r * O + o) * S;
      phi[F] = v0;
      if (F == 1) {
        phi[0] = total;
        continue;
      }
      // Eliminate the last feature: phi_last = total - sum of the others.
      Eigen::MatrixXd ata = Eigen::MatrixXd::Zero(F - 1, F - 1);
      Eigen::VectorXd atb = Eigen::VectorXd::Zero(F - 1);
      Eigen::VectorXd a(F - 1);
      for (int64_t c = 0; c < M; ++c) {
        const auto& z = coalitions[static_cast<size_t>(c)];
        const double zl = z[static_cast<size_t>(F - 1)];
        for (int64_t i = 0; i + 1 < F; ++i) a(i) = z[static_cast<size_t>(i)] - zl;
        const double w = weights[static_cast<size_t>(c)], y = v(c + 2) - v0 - zl * total;
        ata.selfadjointView<Eigen::Lower>().rankUpdate(a, w);
        atb += w * y * a;
      }
      ata = ata.selfadjointView<Eigen::Lower>();
      const Eigen::LDLT<Eigen::MatrixXd> ldlt = ata.ldlt();
      const Eigen::VectorXd x = ldlt.solve(atb);
      double rest = 0;
      for (int64_t i = 0; i + 1 < F; ++i) {
        phi[i] = x(i);
        rest += x(i);
      }
      phi[F - 1] = total - rest;
      if (!with_errors) continue;
      // Sandwich covariance of x over the pairs (phi_last's error is minus the others' sum).
      Eigen::MatrixXd meat = Eigen::MatrixXd::Zero(F - 1, F - 1);
      Eigen::VectorXd u(F - 1);
      for (int64_t q = 0; q < P; ++q) {
        u.setZero();
        for (int64_t c = 2 * q; c < 2 * q + 2; ++c) {
          const auto& z = coalitions[static_cast<size_t>(c)];
          const double zl = z[static_cast<size_t>(F - 1)];
          for (int64_t i = 0; i + 1 < F; ++i) a(i) = z[static_cast<size_t>(i)] - zl;
          const double residual = v(c + 2) - v0 - zl * total - a.dot(x);
          u += residual * a;
        }
        meat.selfadjointView<Eigen::Lower>().rankUpdate(u, 1.0);
      }
      meat = meat.selfadjointView<Eigen::Lower>();
      const Eigen::MatrixXd bread = ldlt.solve(Eigen::MatrixXd::Identity(F - 1, F - 1));
      const Eigen::MatrixXd cov =
          bread * meat * bread * (static_cast<double>(P) / static_cast<double>(P - (F - 1)));
      double* se = out.std_errors.data() + (r * O + o) * F;
      for (int64_t i = 0; i + 1 < F; ++i) se[i] = std::sqrt(std::max(0.0, cov(i, i)));
      se[F - 1] = std::sqrt(std::max(0.0, cov.sum()));
    }
  }
  return out;
}

}  // namespace flock::explain
