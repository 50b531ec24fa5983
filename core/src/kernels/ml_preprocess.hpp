// Internal to flock_core: what the preprocessing kernels (ml_preprocess.cpp) show the optimizer
// (core/src/optimize/).
#pragma once

#include <vector>

#include "flock/kernel.hpp"

namespace flock::preprocess {

// Scaler: Y = (float(X) - offset) * scale per column, in float; one value for every column when
// there is one.
class ScalerKernel : public Kernel {
 public:
  virtual const std::vector<float>& offsets() const = 0;
  virtual const std::vector<float>& scales() const = 0;
};

// Imputer: Y = X with the values equal to `replaced` (NaN: every NaN) replaced per column, same
// element type. Only the float form (imputed_value_floats) is shown; imputed_floats() is empty
// for the int64 form.
class ImputerKernel : public Kernel {
 public:
  virtual const std::vector<float>& imputed_floats() const = 0;
  virtual float replaced_float() const = 0;
};

}  // namespace flock::preprocess
