// Internal to flock_core: KernelSHAP for models no exact method covers (kernel_shap.cpp).
#pragma once

#include "flock/explain.hpp"

namespace flock::explain {

Explanation kernel_shap(const Model& model, const FeatureBatch& batch, const Options& options);

}  // namespace flock::explain
