// What the optimizer's query rewrites (optimize_query.cpp, issue 13) share: a model reference of a
// query resolved at plan time, the plan's dependency on the catalog, and EXPLAIN lines for what a
// rewrite did. Plain PostgreSQL code.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/plannodes.h"
}
#undef flock

namespace flock::pg {

struct ModelHandle;  // cache.hpp (not included here: flock/model.hpp's flock::Plan would hide PostgreSQL's
                     // Plan)

// A model reference that is a Const in a query (name text or flock.model value), resolved at plan
// time for the optimizer's query rewrites, as current_user, to the same model the executor would
// resolve. Never raises: nullptr when it cannot (not a Const, NULL, not found, no privilege, any
// error: it runs in an internal subtransaction and says why at DEBUG1). Palloc'd in
// CurrentMemoryContext; the compiled model is held by a ModelHandle freed with that context.
struct PlanModel {
  ModelHandle* handle;  // handle->model: std::shared_ptr<const flock::Model>
  const char* label;    // "name@version" or "model <sha12>"
  char sha256[65];
};
PlanModel* plan_model(Node* model_arg);

// flock::optimize::cost of the resolved model (trees x average depth, multiply-adds, ...), kept
// per model hash in this backend: walking a large ensemble's nodes takes milliseconds, and every
// planning of a query that calls it asks (the prediction costs, the inliner). -1: no estimate
// (out of memory). Never raises.
double plan_model_cost(const PlanModel* pm);

// Records that the plan being built depends on the catalog's current resolutions: appends the
// flock.models relation OID to stmt->relationOids, so that any catalog change (the catalog's
// trigger sends a relcache invalidation of flock.models) invalidates cached and prepared plans,
// and marks the plan specific to the current role (resolutions depend on privileges).
void plan_depends_on_models(PlannedStmt* stmt);

// EXPLAIN lines for query rewrites: a pass calls plan_note("Flock Derived Filter", "(f00 >= 0.82)")
// while planning; when the planning is for EXPLAIN, the notes are printed after the plan, inside
// the query's group in every format. Outside EXPLAIN notes are not collected. verbose_text, when
// not null, is shown instead of text under EXPLAIN VERBOSE.
void plan_note(const char* label, const char* text, const char* verbose_text = nullptr);
// Whether notes are being collected (an EXPLAIN is planning): a pass may skip building them.
bool plan_notes_wanted();

// _PG_init: chains the ExplainOneQuery hook that collects and prints the notes.
void install_plan_notes();

// Runs work(arg) in an internal subtransaction in the caller's memory context: true when it
// finished; false when it raised an error, rolled back and reported at DEBUG1 as
// "flock optimizer: <what>: <message>". A query cancel or statement_timeout is raised again.
bool plan_in_subtransaction(void (*work)(void*), void* arg, const char* what);

// Whether predictions of the model are recorded (an audit policy other than 'off'), as the
// prediction functions find it (by the resolved name; a flock.model value by its sha256): audit
// records carry every input and every prediction, so rewrites that drop inputs or calls leave such
// a model alone. Read as the caller in a subtransaction; any error but a cancel means "audited".
bool plan_model_audited(Node* model_arg, const PlanModel* pm);

}  // namespace flock::pg
