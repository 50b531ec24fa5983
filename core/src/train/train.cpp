// The parts of training every algorithm shares: the held-out split, the metrics, the dispatch.
#include "flock/train.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "flock/error.hpp"
#include "train_internal.hpp"

namespace flock::train {

namespace {

std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Area under the ROC curve with tied scores counted half (the Mann-Whitney statistic).
double roc_auc(const std::vector<float>& truth, const std::vector<double>& score) {
  std::vector<std::size_t> order(truth.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return score[a] < score[b]; });
  double positives = 0, negatives = 0, rank_sum = 0;
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j < order.size() && score[order[j]] == score[order[i]]) ++j;
    const double mid_rank = (static_cast<double>(i) + static_cast<double>(j) + 1) / 2;  // 1-based average
    for (std::size_t k = i; k < j; ++k) {
      if (truth[order[k]] > 0.5f) {
        rank_sum += mid_rank;
        positives += 1;
      } else {
        negatives += 1;
      }
    }
    i = j;
  }
  if (positives == 0 || negatives == 0) return std::nan("");
  return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives);
}

constexpr double kProbabilityFloor = 1e-15;  // sklearn's log_loss clip

}  // namespace

bool held_out(std::int32_t seed, std::uint64_t row, double test_fraction) {
  const std::uint64_t x = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(seed)) << 32) + row;
  const double u = static_cast<double>(splitmix64(x) >> 11) * 0x1.0p-53;
  return u < test_fraction;
}

nlohmann::json evaluate(const std::string& task, const std::vector<float>& truth,
                        const std::vector<double>& predicted, int classes) {
  nlohmann::json metrics = nlohmann::json::object();
  const std::size_t n = truth.size();
  metrics["test_rows"] = n;
  if (n == 0) return metrics;
  if (task == "regression") {
    double mean = 0;
    for (float y : truth) mean += y;
    mean /= static_cast<double>(n);
    double se = 0, ae = 0, total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double e = predicted[i] - truth[i];
      se += e * e;
      ae += std::fabs(e);
      total += (truth[i] - mean) * (truth[i] - mean);
    }
    metrics["rmse"] = std::sqrt(se / static_cast<double>(n));
    metrics["mae"] = ae / static_cast<double>(n);
    if (total > 0) metrics["r2"] = 1 - se / total;
  } else if (task == "binary") {
    double loss = 0;
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double p = std::clamp(predicted[i], kProbabilityFloor, 1 - kProbabilityFloor);
      loss -= truth[i] > 0.5f ? std::log(p) : std::log(1 - p);
      correct += (predicted[i] > 0.5) == (truth[i] > 0.5f);
    }
    const double auc = roc_auc(truth, predicted);
    if (!std::isnan(auc)) metrics["auc"] = auc;
    metrics["log_loss"] = loss / static_cast<double>(n);
    metrics["accuracy"] = static_cast<double>(correct) / static_cast<double>(n);
  } else if (task == "multiclass" && classes > 0) {
    double loss = 0;
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double* p = &predicted[i * static_cast<std::size_t>(classes)];
      const int label = static_cast<int>(truth[i]);
      const int best = static_cast<int>(std::max_element(p, p + classes) - p);
      correct += best == label;
      if (label >= 0 && label < classes) loss -= std::log(std::clamp(p[label], kProbabilityFloor, 1.0));
    }
    metrics["log_loss"] = loss / static_cast<double>(n);
    metrics["accuracy"] = static_cast<double>(correct) / static_cast<double>(n);
  } else if (task == "multiclass_labels") {
    std::size_t correct = 0;
    for (std::size_t i = 0; i < n; ++i)
      correct += static_cast<int>(predicted[i]) == static_cast<int>(truth[i]);
    metrics["accuracy"] = static_cast<double>(correct) / static_cast<double>(n);
  }
  return metrics;
}

Split split_rows(const TrainingData& data, double test_fraction, std::int32_t seed) {
  Split split;
  for (std::int64_t i = 0; i < data.rows; ++i) {
    auto& part = held_out(seed, static_cast<std::uint64_t>(i), test_fraction) ? split.test : split.train;
    part.push_back(i);
  }
  return split;
}

Result train(const TrainingData& data, const Request& request) {
  if (!request.params.is_object())
    fail(ErrorCode::InvalidInput, "params must be a JSON object",
         "e.g. '{\"max_depth\": 3, \"num_boost_round\": 50}'");
  if (!(request.test_fraction >= 0 && request.test_fraction < 1))
    fail(ErrorCode::InvalidInput, "test_fraction must be at least 0 and less than 1",
         "0.2 holds out about a fifth of the rows for the metrics.");
  if (data.rows == 0)
    fail(ErrorCode::InvalidInput, "the training data has no rows", "Check the table or query.");
  if (request.algorithm == "xgboost") return train_xgboost(data, request);
  if (request.algorithm == "linear" || request.algorithm == "logistic") return train_linear(data, request);
  fail(ErrorCode::InvalidInput, "unknown training algorithm \"" + request.algorithm + "\"",
       "Use 'xgboost', 'linear' (ridge regression) or 'logistic' (L2-penalized logistic regression).");
}

}  // namespace flock::train
