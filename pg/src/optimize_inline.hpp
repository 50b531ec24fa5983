// Model inlining (issue 13, item 4), a pass over the Query before standard_planner: a call
// flock.predict(constant model, row) of a small tree regressor or linear regressor whose row binds
// to plain numeric columns becomes the model as a PostgreSQL expression (CASE, float8 arithmetic,
// flock._round_to_float4), so no model call is left. See optimize_inline.cpp for what makes the
// expression return exactly what the model would, and never raise where the model does not.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/parsenodes.h"
}
#undef flock

namespace flock::pg {

struct QueryOptimizeContext;  // optimize_query.hpp

extern bool optimizer_inline;  // GUC flock.optimizer_inline

// Rewrites the calls of `parse` (and of every query nested in it) that it can inline; returns the
// query. Sets ctx->used_plan_models when it inlined one (the plan then depends on the catalog and
// the role: the model was resolved, and its access checked, at plan time). Never raises for a
// query it cannot rewrite (DEBUG1 says why). A pass of optimize_query.
Query* inline_models(Query* parse, QueryOptimizeContext* ctx);

}  // namespace flock::pg
