// flock::train: the held-out split, the metrics, and models that load and answer as fitted.
#include "flock/train.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <span>
#include <vector>

#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/model.hpp"

namespace {

using flock::train::TrainingData;

// y = 2 a - 3 b + 1 (exactly), a and b on a grid.
TrainingData linear_data(int n) {
  TrainingData d;
  d.rows = n;
  d.cols = 2;
  d.feature_names = {"a", "b"};
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(i % 17) / 4, b = static_cast<float>(i % 5) - 2;
    d.features.insert(d.features.end(), {a, b});
    d.target.push_back(2 * a - 3 * b + 1);
  }
  return d;
}

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(TrainSplit, HoldsOutAboutTheFractionAndDependsOnTheSeed) {
  int held = 0, differ = 0;
  constexpr int kRows = 100000;
  for (int i = 0; i < kRows; ++i) {
    held += flock::train::held_out(0, i, 0.2);
    differ += flock::train::held_out(0, i, 0.2) != flock::train::held_out(1, i, 0.2);
    EXPECT_FALSE(flock::train::held_out(7, i, 0.0));
    EXPECT_EQ(flock::train::held_out(-3, i, 0.3), flock::train::held_out(-3, i, 0.3));
  }
  EXPECT_NEAR(held / double(kRows), 0.2, 0.01);
  EXPECT_GT(differ, kRows / 10);
}

TEST(TrainMetrics, AucCountsTiesHalfAndRegressionIsExactOnAPerfectFit) {
  auto m = flock::train::evaluate("binary", {0, 0, 1, 1}, {0.1, 0.4, 0.35, 0.8}, 0);
  EXPECT_DOUBLE_EQ(m["auc"].get<double>(), 0.75);  // 3 of 4 (positive, negative) pairs ordered
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), 0.75);
  m = flock::train::evaluate("binary", {0, 1}, {0.5, 0.5}, 0);
  EXPECT_DOUBLE_EQ(m["auc"].get<double>(), 0.5);
  m = flock::train::evaluate("regression", {1, 2, 3}, {1, 2, 3}, 0);
  EXPECT_DOUBLE_EQ(m["rmse"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(m["r2"].get<double>(), 1);
}

TEST(TrainLinear, RidgeWithoutPenaltyRecoversAnExactLinearFunction) {
  flock::train::Request request;
  request.algorithm = "linear";
  request.params = {{"alpha", 0.0}};
  auto result = flock::train::train(linear_data(200), request);
  EXPECT_EQ(result.format, "onnx");
  EXPECT_LT(result.metrics["rmse"].get<double>(), 1e-4);
  auto model = flock::Model::load(bytes(result.model));
  EXPECT_EQ(model->signature().task, flock::Task::Regression);
}

TEST(TrainLinear, UnknownParameterAndMissingValueAreErrors) {
  flock::train::Request request;
  request.algorithm = "linear";
  request.params = {{"C", 1.0}};
  EXPECT_THROW(flock::train::train(linear_data(20), request), flock::Error);
  request.params = nlohmann::json::object();
  auto d = linear_data(20);
  d.features[3] = std::nanf("");
  try {
    flock::train::train(d, request);
    ADD_FAILURE() << "no error";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), flock::ErrorCode::MissingValue);
  }
}

TEST(TrainXgboost, TrainsAModelFlockLoadsAndStopsWhenInterrupted) {
  flock::train::Request request;
  request.algorithm = "xgboost";
  request.params = {{"num_boost_round", 5}, {"max_depth", 2}};
  auto result = flock::train::train(linear_data(200), request);
  EXPECT_EQ(result.format, "xgboost");
  EXPECT_EQ(result.metrics["rounds"].get<int>(), 5);
  EXPECT_NO_THROW(flock::Model::load(bytes(result.model)));

  auto previous = flock::set_interrupt_check([] { return true; });
  try {
    flock::train::train(linear_data(200), request);
    ADD_FAILURE() << "not interrupted";
  } catch (const flock::Error& e) {
    EXPECT_EQ(e.code(), flock::ErrorCode::Cancelled);
  }
  flock::set_interrupt_check(previous);

  request.params = {{"max_dpeth", 2}};
  EXPECT_THROW(flock::train::train(linear_data(50), request), flock::Error);
}

}  // namespace
