// Aggregates of predictions over a distributed table planned as partial aggregates on the shards
// (issue 18): distribute_plan.cpp.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/params.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
}
#undef flock

namespace flock::pg {

// flock.distribute_aggregates (pinned.cpp defines it).
extern bool distribute_aggregates;

// The plan of `parse` rewritten into flock.on_shards (partial aggregates on the shards, final
// ones here) when it is an aggregate of predictions over a table whose partitions are all
// foreign; nullptr otherwise (PostgreSQL plans it). Never raises.
PlannedStmt* plan_on_shards(Query* parse, int cursor_options, ParamListInfo params);

// flock.distribute_predictions (pinned.cpp defines it).
extern bool distribute_predictions;

// `parse` with every query level that computes predictions of a distributed table's rows outside
// WHERE reading the columns it uses and the predictions from the shards instead
// (flock._send_to_shards and dblink_get_result: the shards score, the level's other work stays
// here); the level itself when it is not provably the same query (DEBUG1 says why). Sets
// *used_models when a model was resolved (the plan then depends on the catalog). Never raises.
Query* distribute_scans(Query* parse, bool* used_models);

}  // namespace flock::pg
