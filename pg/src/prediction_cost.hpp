// Costs of the prediction functions from their compiled models (prediction_cost.cpp): the
// prosupport function flock._prediction_support.
#pragma once

namespace flock::pg {

extern bool optimizer_costs;  // GUC flock.optimizer_costs

}  // namespace flock::pg
