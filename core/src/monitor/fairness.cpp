// Fairness metrics per group (flock/monitor.hpp), with Fairlearn's definitions.
#include <algorithm>
#include <cmath>

#include "flock/error.hpp"
#include "flock/monitor.hpp"

namespace flock::monitor {

namespace {

std::optional<double> ratio(int64_t numerator, int64_t denominator) {
  if (denominator == 0) return std::nullopt;
  return double(numerator) / double(denominator);
}

void finish(ClassificationGroup& g) {
  g.selection_rate = double(g.predicted_positives) / double(g.count);
  g.true_positive_rate = ratio(g.true_positives, g.positives);
  g.false_positive_rate = ratio(g.false_positives, g.count - g.positives);
  g.precision = ratio(g.true_positives, g.predicted_positives);
  const int64_t true_negatives = g.count - g.positives - g.false_positives;
  g.accuracy = double(g.true_positives + true_negatives) / double(g.count);
}

// Largest minus smallest of the defined values; undefined when none is.
template <typename Get>
std::optional<double> spread(const std::vector<ClassificationGroup>& groups, Get get) {
  std::optional<double> lo, hi;
  for (const auto& g : groups) {
    const std::optional<double> v = get(g);
    if (!v) continue;
    lo = lo ? std::min(*lo, *v) : *v;
    hi = hi ? std::max(*hi, *v) : *v;
  }
  if (!lo) return std::nullopt;
  return *hi - *lo;
}

// Smallest over largest of the defined values; undefined when none is or the largest is 0.
template <typename Get>
std::optional<double> ratio_of(const std::vector<ClassificationGroup>& groups, Get get) {
  std::optional<double> lo, hi;
  for (const auto& g : groups) {
    const std::optional<double> v = get(g);
    if (!v) continue;
    lo = lo ? std::min(*lo, *v) : *v;
    hi = hi ? std::max(*hi, *v) : *v;
  }
  if (!hi || *hi == 0) return std::nullopt;
  return *lo / *hi;
}

void check_groups(size_t rows, size_t a, size_t b, const std::vector<int32_t>& group, int32_t groups) {
  if (a != rows || b != rows)
    fail(ErrorCode::InvalidInput, "fairness: groups, labels and predictions differ in length");
  if (rows == 0) fail(ErrorCode::InvalidInput, "fairness: no rows", "Pass a data set with at least one row.");
  for (int32_t g : group)
    if (g < 0 || g >= groups) fail(ErrorCode::InvalidInput, "fairness: group index out of range");
}

}  // namespace

ClassificationFairness classification_fairness(const std::vector<int32_t>& group, int32_t groups,
                                               const std::vector<uint8_t>& y_true,
                                               const std::vector<uint8_t>& y_pred) {
  check_groups(group.size(), y_true.size(), y_pred.size(), group, groups);
  ClassificationFairness out;
  out.groups.resize(size_t(groups));
  for (size_t i = 0; i < group.size(); ++i) {
    for (ClassificationGroup* g : {&out.groups[size_t(group[i])], &out.overall}) {
      g->count += 1;
      g->positives += y_true[i] ? 1 : 0;
      g->predicted_positives += y_pred[i] ? 1 : 0;
      g->true_positives += (y_true[i] && y_pred[i]) ? 1 : 0;
      g->false_positives += (!y_true[i] && y_pred[i]) ? 1 : 0;
    }
  }
  for (auto& g : out.groups)
    if (g.count == 0) fail(ErrorCode::InvalidInput, "fairness: a group has no rows");
  for (auto& g : out.groups) finish(g);
  finish(out.overall);
  out.demographic_parity_difference =
      *spread(out.groups, [](const auto& g) { return std::optional(g.selection_rate); });
  double lowest = 1, highest = 0;
  for (const auto& g : out.groups) {
    lowest = std::min(lowest, g.selection_rate);
    highest = std::max(highest, g.selection_rate);
  }
  if (highest > 0) out.demographic_parity_ratio = lowest / highest;
  out.true_positive_rate_difference = spread(out.groups, [](const auto& g) { return g.true_positive_rate; });
  out.false_positive_rate_difference =
      spread(out.groups, [](const auto& g) { return g.false_positive_rate; });
  if (out.true_positive_rate_difference && out.false_positive_rate_difference)
    out.equalized_odds_difference =
        std::max(*out.true_positive_rate_difference, *out.false_positive_rate_difference);
  out.equal_opportunity_difference = out.true_positive_rate_difference;
  out.true_positive_rate_ratio = ratio_of(out.groups, [](const auto& g) { return g.true_positive_rate; });
  out.false_positive_rate_ratio = ratio_of(out.groups, [](const auto& g) { return g.false_positive_rate; });
  if (out.true_positive_rate_ratio && out.false_positive_rate_ratio)
    out.equalized_odds_ratio = std::min(*out.true_positive_rate_ratio, *out.false_positive_rate_ratio);
  out.equal_opportunity_ratio = out.true_positive_rate_ratio;
  out.accuracy_difference = spread(out.groups, [](const auto& g) { return std::optional(g.accuracy); });
  return out;
}

RegressionFairness regression_fairness(const std::vector<int32_t>& group, int32_t groups,
                                       const std::vector<double>& y_true, const std::vector<double>& y_pred) {
  check_groups(group.size(), y_true.size(), y_pred.size(), group, groups);
  for (size_t i = 0; i < y_true.size(); ++i)
    if (!std::isfinite(y_true[i]) || !std::isfinite(y_pred[i]))
      fail(ErrorCode::InvalidInput, "fairness: a label or prediction is not finite",
           "Leave out rows whose label is NaN or infinite.");
  RegressionFairness out;
  out.groups.resize(size_t(groups));
  std::vector<double> squared(size_t(groups) + 1), absolute(size_t(groups) + 1), error(size_t(groups) + 1),
      label(size_t(groups) + 1), prediction(size_t(groups) + 1);
  for (size_t i = 0; i < group.size(); ++i) {
    const double e = y_pred[i] - y_true[i];
    for (size_t k : {size_t(group[i]), size_t(groups)}) {
      (k == size_t(groups) ? out.overall : out.groups[k]).count += 1;
      squared[k] += e * e;
      absolute[k] += std::fabs(e);
      error[k] += e;
      label[k] += y_true[i];
      prediction[k] += y_pred[i];
    }
  }
  for (size_t k = 0; k <= size_t(groups); ++k) {
    RegressionGroup& g = k == size_t(groups) ? out.overall : out.groups[k];
    if (g.count == 0) fail(ErrorCode::InvalidInput, "fairness: a group has no rows");
    const double n = double(g.count);
    g.mean_label = label[k] / n;
    g.mean_prediction = prediction[k] / n;
    g.mean_error = error[k] / n;
    g.mae = absolute[k] / n;
    g.rmse = std::sqrt(squared[k] / n);
  }
  auto range = [&](auto get) {
    double lo = get(out.groups[0]), hi = lo;
    for (const auto& g : out.groups) {
      lo = std::min(lo, get(g));
      hi = std::max(hi, get(g));
    }
    return std::pair(lo, hi);
  };
  auto [e_lo, e_hi] = range([](const RegressionGroup& g) { return g.mean_error; });
  auto [a_lo, a_hi] = range([](const RegressionGroup& g) { return g.mae; });
  auto [r_lo, r_hi] = range([](const RegressionGroup& g) { return g.rmse; });
  out.mean_error_difference = e_hi - e_lo;
  out.mae_difference = a_hi - a_lo;
  out.rmse_difference = r_hi - r_lo;
  if (a_hi > 0) out.mae_ratio = a_lo / a_hi;
  return out;
}

}  // namespace flock::monitor
