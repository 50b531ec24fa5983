// The optimizer's passes that change what PostgreSQL plans (issue 13): rewrites of the Query that
// run in the planner hook before PostgreSQL's planner, so that its own index choice, partition
// pruning and join removal do the rest. One function per pass in optimize_query.cpp, each guarded
// by its own GUC and by flock.optimizer. A pass never raises: what it cannot prove safe it leaves
// as it is, with a DEBUG1 message saying why. Plain PostgreSQL code.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/params.h"
#include "nodes/parsenodes.h"
}
#undef flock

namespace flock::pg {

// GUCs (module.cpp).
// flock.optimizer_derive_filters: off; on (when the planner estimates the query cheaper with the
// derived quals); always (whatever the estimate: for tests and benchmarks of the derived quals).
enum class DeriveFilters : int { Off, On, Always };
extern int optimizer_derive_filters;

// What the passes share while one query is planned.
struct QueryOptimizeContext {
  const char* query_string;
  int cursor_options;
  ParamListInfo params;
  Oid flock_namespace;    // set by optimize_query
  bool used_plan_models;  // a pass resolved a model at plan time: the plan depends on the catalog
};

// The query with every enabled pass applied (possibly `parse` itself, changed in place, as
// PostgreSQL's planner changes it). When a pass relied on a model resolved at plan time it sets
// ctx->used_plan_models, and the caller must call plan_depends_on_models on the plan.
Query* optimize_query(Query* parse, QueryOptimizeContext* ctx);

}  // namespace flock::pg
