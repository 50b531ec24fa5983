// Internal to flock_core: what the linear kernels (LinearRegressor / LinearClassifier,
// ml_linear.cpp) show the optimizer (core/src/optimize/).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flock/kernel.hpp"

namespace flock::linear {

class LinearKernel : public Kernel {
 public:
  // Per input column, for an input of `width` columns: whether any coefficient of that column is
  // nonzero (NaN counts as nonzero). nullopt when the coefficients do not fit that width (the
  // kernel would refuse such an input).
  virtual std::optional<std::vector<bool>> weighted_columns(int64_t width) const = 0;

  // A single-target regressor with no post transform: y = float(sum_k float(x_k) * coefficients[k]
  // + intercept), accumulated in double (in Eigen's order), the intercept added last when the
  // model has one. nullopt for anything else (classifiers, several targets, a post transform).
  struct Affine {
    std::vector<float> coefficients;
    bool has_intercept = false;
    double intercept = 0;
  };
  virtual std::optional<Affine> affine() const { return std::nullopt; }
  // The raw scores (before any post_transform) for an input of `width` columns, which explanations
  // decompose (core/src/explain/): score o = intercepts[o] (0 when absent) + sum_k
  // coefficients[o * width + k] * x_k. names: per score, the class label it is for (the positive
  // class for ORT's one-row binary case), or the target index. nullopt when the coefficients do not
  // fit `width`.
  struct Scores {
    int64_t outputs = 0;
    std::vector<float> coefficients;
    std::vector<double> intercepts;
    std::vector<std::string> names;
  };
  virtual std::optional<Scores> scores(int64_t width) const = 0;
  // The same kernel with other coefficients and intercept (same count of coefficients), for a
  // regressor whose affine() has a value; nullptr otherwise.
  virtual std::unique_ptr<Kernel> with_affine(const Affine&) const { return nullptr; }
};

// Columns of a row-major [rows, width] coefficient table with a nonzero entry; nullopt when the
// table does not split into rows of `width`.
std::optional<std::vector<bool>> nonzero_columns(const std::vector<float>& coefficients, int64_t width);

}  // namespace flock::linear
