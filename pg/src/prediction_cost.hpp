// Costs of the prediction functions from their compiled models (prediction_cost.cpp): the
// prosupport function flock._prediction_support.
#pragma once

namespace flock::pg {

extern bool optimizer_costs;  // GUC flock.optimizer_costs

// Chains the set_rel_pathlist_hook that recosts scans with a prediction qual for quals evaluated
// cheapest first (correct_qual_costs). Called from _PG_init.
void install_prediction_costs();

}  // namespace flock::pg
