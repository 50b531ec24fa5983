// flock.explain_rows batched by the FlockBatchScore node (explain_plan.cpp): a planner step run
// before batch_plan.cpp's rewrite.
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

// Rewrites each Nested Loop that calls flock.explain_rows(const model, outer row, const, const)
// in an inner Function Scan over a plain outer scan so that the outer scan computes the
// equivalent flock.explain (then batched) and the inner side lists its result.
void batch_explain_rows(PlannedStmt* stmt, Oid flock_namespace);

}  // namespace flock::pg
