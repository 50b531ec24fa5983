// What the training algorithms share inside the core.
#pragma once

#include <cstdint>
#include <vector>

#include "flock/train.hpp"

namespace flock::train {

struct Split {
  std::vector<std::int64_t> train;  // row numbers, in the data's order
  std::vector<std::int64_t> test;
};

Split split_rows(const TrainingData& data, double test_fraction, std::int32_t seed);

Result train_xgboost(const TrainingData& data, const Request& request);
Result train_linear(const TrainingData& data, const Request& request);

}  // namespace flock::train
