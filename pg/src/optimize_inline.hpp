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

// Models are inlined only when their optimize::cost per row is at most this: past it a batched
// model call is cheaper than PostgreSQL evaluating the same decisions as expressions.
// bench/optimizer_inline.py, 200,000 rows (README, "The optimizer"): one tree of depth 1 (cost 2)
// runs 1.34-1.39x faster inlined than batched; depth 2 and 3 (cost 3, 4) 0.80-0.91x, 4 trees of
// depth 4 (cost 20) 0.30x; a 4-column linear model (cost 4) 0.85-1.08x. A call that cannot be
// batched (one row per call) is 5-14x slower than inlined up to cost 10, but the pass runs before
// the plan says whether a call will be batched.
constexpr double kDefaultInlineMaxCost = 2;
// flock.optimizer_inline_max_cost, a developer setting (not in postgresql.conf.sample, not in SHOW
// ALL) for tests and benchmarks that inline larger models than the default allows.
extern double inline_max_cost;

// Rewrites the calls of `parse` (and of every query nested in it) that it can inline; returns the
// query. Sets ctx->used_plan_models when it inlined one (the plan then depends on the catalog and
// the role: the model was resolved, and its access checked, at plan time). Never raises for a
// query it cannot rewrite (DEBUG1 says why). A pass of optimize_query.
Query* inline_models(Query* parse, QueryOptimizeContext* ctx);

}  // namespace flock::pg
