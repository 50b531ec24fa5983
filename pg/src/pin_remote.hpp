// Shipping predictions to shards (issue 18): pin_remote.cpp.
#pragma once

#include "optimize_query.hpp"
#include "pg.hpp"  // must come first

namespace flock::pg {

// flock.pin_remote (pinned.cpp defines it).
extern bool pin_remote_predictions;

// In query levels that read a foreign table, flock.predict*(constant ref, float4[] of columns) in
// WHERE / ON become the pinned functions of the version the ref resolves to now, which
// postgres_fdw ships. Sets ctx->used_plan_models when it pinned one. Never raises.
Query* pin_remote(Query* parse, QueryOptimizeContext* ctx);

}  // namespace flock::pg
