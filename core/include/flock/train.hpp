// Training models from a table of numbers (issue 16): XGBoost through libxgboost's C API, and
// ridge / L2-penalized logistic regression solved with Eigen and written as ONNX-ML.
//
// Pure C++: the PostgreSQL glue (pg/src/train.cpp) reads the rows into a TrainingData and calls
// train(); progress and cancellation come back through the callbacks and poll_interrupt().
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace flock::train {

// Rows in the data's order, row-major; NaN is a missing value (SQL NULL).
struct TrainingData {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::vector<float> features;  // rows * cols
  std::vector<float> target;    // rows
  std::vector<std::string> feature_names;
};

// The held-out split, drawn so that anyone can draw it again: row i (0-based, in the data's order)
// is held out when u(seed, i) < test_fraction, where
//   x = (uint64(uint32(seed)) << 32) + i,   u = (splitmix64(x) >> 11) * 2^-53
// and splitmix64 is Steele, Lea and Flood's finalizer (z += 0x9E3779B97F4A7C15; z = (z ^ (z >> 30))
// * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^ (z >> 31)), all mod 2^64.
bool held_out(std::int32_t seed, std::uint64_t row, double test_fraction);

struct Progress {
  int round = 0;      // boosting rounds (or solver iterations) done
  int rounds = 0;     // planned
  double metric = 0;  // the last evaluation on the held-out rows (NaN: none)
  std::string metric_name;
  int best_round = 0;  // early stopping: set on the last call, the 1-based round kept
};

struct Request {
  std::string algorithm;  // 'xgboost', 'linear', 'logistic'
  nlohmann::json params;  // a JSON object, names as the library names them
  double test_fraction = 0.2;
  std::int32_t seed = 0;
  int default_threads = 1;                           // nthread when params do not give it
  std::function<void(const Progress&)> on_progress;  // called after every round; may throw
};

struct Result {
  std::string model;           // the serialized model
  std::string format;          // 'xgboost' (JSON) or 'onnx'
  nlohmann::json params;       // the parameters used, defaults filled in
  nlohmann::json metrics;      // on the held-out rows, plus rows / rounds / best_iteration
  nlohmann::json environment;  // library versions
};

// Trains; throws flock::Error (InvalidInput for bad parameters or data, with a hint; Cancelled
// when interrupted) or std::bad_alloc.
Result train(const TrainingData& data, const Request& request);

// Metrics of predictions against the truth. `task` is 'regression' (rmse, mae, r2), 'binary'
// (auc, log_loss, accuracy; predictions are P(class 1)) or 'multiclass' (log_loss, accuracy;
// predictions are rows * classes probabilities).
nlohmann::json evaluate(const std::string& task, const std::vector<float>& truth,
                        const std::vector<double>& predicted, int classes);

}  // namespace flock::train
