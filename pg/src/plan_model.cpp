// Plan-time model resolution, the plan's dependency on the catalog, and EXPLAIN notes for the
// optimizer's query rewrites (see plan_model.hpp). Plain PostgreSQL code; C++ only inside
// flock_guard.
#include "pg.hpp"  // must come first

extern "C" {
#include "access/xact.h"
#include "commands/explain.h"
#include "executor/instrument.h"
#include "nodes/nodeFuncs.h"
#include "portability/instr_time.h"
#include "tcop/tcopprot.h"
#include "utils/syscache.h"
}
#undef flock

#include <cstring>
#include <string>
#include <unordered_map>

#include "cache.hpp"
#include "flock/optimize.hpp"
#include "guard.hpp"
#include "plan_model.hpp"

namespace flock::pg {

namespace {

// The flock.model type, or InvalidOid.
Oid model_type_oid() {
  Oid ns = get_namespace_oid("flock", true);
  if (!OidIsValid(ns)) return InvalidOid;
  return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("model"), ObjectIdGetDatum(ns));
}

// Inside the subtransaction: the same resolution as resolve.cpp's resolve_by_name (flock._resolve
// as current_user, then the bytes of that version unless compiled already). May raise.
void resolve_name_into(PlanModel* out, const char* ref, MemoryContext result_mcxt) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {TEXTOID};
  Datum args[1] = {CStringGetTextDatum(ref)};
  if (SPI_execute_with_args("SELECT r.name, r.version, r.sha256 FROM flock._resolve($1) r", 1, argtypes, args,
                            nullptr, true, 1) != SPI_OK_SELECT ||
      SPI_processed != 1)
    elog(ERROR, "could not resolve model \"%s\"", ref);
  HeapTuple row = SPI_tuptable->vals[0];
  TupleDesc desc = SPI_tuptable->tupdesc;
  char* name = SPI_getvalue(row, desc, 1);
  char* version = SPI_getvalue(row, desc, 2);
  char* sha = SPI_getvalue(row, desc, 3);
  if (!name || !version || !sha || strlen(sha) != kSha256HexLen)
    elog(ERROR, "model \"%s\" has no sha256", ref);
  ModelHandle* handle = out->handle;
  flock_guard([&] { handle->model = find_cached_model(sha); });
  if (!handle->model) {
    Oid key_types[2] = {TEXTOID, INT4OID};
    Datum key[2] = {CStringGetTextDatum(name), Int32GetDatum(atoi(version))};
    if (SPI_execute_with_args("SELECT model FROM flock.models WHERE name = $1 AND version = $2", 2, key_types,
                              key, nullptr, true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "model \"%s@%s\" vanished while it was being loaded", name, version);
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (isnull) elog(ERROR, "model \"%s@%s\" has no bytes", name, version);
    bytea* bytes = DatumGetByteaPP(d);
    flock_guard([&] {
      handle->model =
          cached_model(sha, {reinterpret_cast<const uint8_t*>(VARDATA_ANY(bytes)), VARSIZE_ANY_EXHDR(bytes)});
    });
  }
  out->label = MemoryContextStrdup(result_mcxt, psprintf("%s@%s", name, version));
  memcpy(out->sha256, sha, kSha256HexSize);
  SPI_finish();
}

// Inside the subtransaction: a flock.model value, checked when it was input (model_type.cpp).
void resolve_value_into(PlanModel* out, Datum value, MemoryContext result_mcxt) {
  bytea* bytes = DatumGetByteaPP(value);
  size_t len = VARSIZE_ANY_EXHDR(bytes);
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(bytes)), len, sha);
  ModelHandle* handle = out->handle;
  flock_guard([&] {
    handle->model = cached_model(sha, {reinterpret_cast<const uint8_t*>(VARDATA_ANY(bytes)), len});
  });
  out->label = MemoryContextStrdup(result_mcxt, psprintf("model %.12s", sha));
  memcpy(out->sha256, sha, kSha256HexSize);
}

// ---- EXPLAIN notes

struct PlanNote {
  char* label;
  char* text;
};

ExplainOneQuery_hook_type prev_explain_one_query = nullptr;
int collecting_depth = 0;  // > 0: an EXPLAIN is planning
bool collecting_verbose = false;
MemoryContext notes_mcxt = nullptr;  // the EXPLAIN's context
List* notes = NIL;

// The text ExplainCloseGroup("Query", NULL, true, es) appended, in es's format, when the group is
// closed at es->indent (after the close); its length when es->str ends with it, else -1.
int query_group_close_length(ExplainState* es) {
  StringInfoData close;
  initStringInfo(&close);
  switch (es->format) {
    case EXPLAIN_FORMAT_JSON:
      appendStringInfoChar(&close, '\n');
      appendStringInfoSpaces(&close, 2 * es->indent);
      appendStringInfoChar(&close, '}');
      break;
    case EXPLAIN_FORMAT_XML:
      appendStringInfoSpaces(&close, 2 * es->indent);
      appendStringInfoString(&close, "</Query>\n");
      break;
    default:
      break;  // YAML's close writes nothing
  }
  int n = close.len;
  bool ends = es->str->len >= n && memcmp(es->str->data + es->str->len - n, close.data, n) == 0;
  pfree(close.data);
  return ends ? n : -1;
}

// Prints the notes as properties of the query just explained: in TEXT after its plan; in the other
// formats the query's group, which ExplainOnePlan closed, is reopened (its closing text taken back,
// its nesting state restored as it was with members written) and closed again after them.
void print_notes(ExplainState* es, List* printed) {
  if (printed == NIL) return;
  bool structured = es->format != EXPLAIN_FORMAT_TEXT;
  if (structured) {
    int n = query_group_close_length(es);
    if (n < 0) return;  // not the layout we know: print nothing rather than break the output
    es->str->len -= n;
    es->str->data[es->str->len] = '\0';
    if (es->format != EXPLAIN_FORMAT_XML) es->grouping_stack = lcons_int(1, es->grouping_stack);
    es->indent++;
  }
  ListCell* lc;
  foreach (lc, printed) {
    auto* note = static_cast<PlanNote*>(lfirst(lc));
    ExplainPropertyText(note->label, note->text, es);
  }
  if (structured) ExplainCloseGroup("Query", nullptr, true, es);
}

// As PostgreSQL's ExplainOneQuery without a hook: plan (timed, buffers counted), then explain.
void standard_explain_one_query(Query* query, int cursor_options, IntoClause* into, ExplainState* es,
                                const char* query_string, ParamListInfo params, QueryEnvironment* query_env) {
  instr_time plan_start, plan_duration;
  BufferUsage bufusage_start, bufusage;
  if (es->buffers) bufusage_start = pgBufferUsage;
  INSTR_TIME_SET_CURRENT(plan_start);
  PlannedStmt* plan = pg_plan_query(query, query_string, cursor_options, params);
  INSTR_TIME_SET_CURRENT(plan_duration);
  INSTR_TIME_SUBTRACT(plan_duration, plan_start);
  if (es->buffers) {
    memset(&bufusage, 0, sizeof(BufferUsage));
    BufferUsageAccumDiff(&bufusage, &pgBufferUsage, &bufusage_start);
  }
  ExplainOnePlan(plan, into, es, query_string, params, query_env, &plan_duration,
                 es->buffers ? &bufusage : nullptr);
}

void explain_one_query(Query* query, int cursor_options, IntoClause* into, ExplainState* es,
                       const char* query_string, ParamListInfo params, QueryEnvironment* query_env) {
  // Notes of an enclosing EXPLAIN (none can be pending here) are kept aside; ours start empty.
  List* outer_notes = notes;
  MemoryContext outer_mcxt = notes_mcxt;
  bool outer_verbose = collecting_verbose;
  notes = NIL;
  notes_mcxt = CurrentMemoryContext;
  collecting_verbose = es->verbose;
  collecting_depth++;
  List* printed = NIL;
  PG_TRY();
  {
    // Queries planned while EXPLAIN ANALYZE runs the plan add their notes too (a function's
    // queries, say): they are shown with this query's.
    if (prev_explain_one_query)
      prev_explain_one_query(query, cursor_options, into, es, query_string, params, query_env);
    else
      standard_explain_one_query(query, cursor_options, into, es, query_string, params, query_env);
    printed = notes;
  }
  PG_FINALLY();
  {
    collecting_depth--;
    notes = outer_notes;
    notes_mcxt = outer_mcxt;
    collecting_verbose = outer_verbose;
  }
  PG_END_TRY();
  print_notes(es, printed);
}

}  // namespace

// Runs `work(arg)` in an internal subtransaction (as PL/pgSQL's exception blocks do), in the
// caller's memory context: true when it finished; false when it raised an error, which is rolled
// back and reported at DEBUG1 as "flock optimizer: <what>: <message>". A query cancel or
// statement_timeout is the user's, not a reason to plan without the optimizer: raised again (as
// PL/pgSQL's WHEN OTHERS does not catch it).
bool plan_in_subtransaction(void (*work)(void*), void* arg, const char* what) {
  MemoryContext mcxt = CurrentMemoryContext;
  ResourceOwner owner = CurrentResourceOwner;
  volatile bool ok = true;
  BeginInternalSubTransaction(nullptr);
  MemoryContextSwitchTo(mcxt);
  PG_TRY();
  {
    work(arg);
    ReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(mcxt);
    CurrentResourceOwner = owner;
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(mcxt);
    ErrorData* edata = CopyErrorData();
    FlushErrorState();
    RollbackAndReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(mcxt);
    CurrentResourceOwner = owner;
    if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED) ReThrowError(edata);
    ereport(DEBUG1, (errmsg_internal("flock optimizer: %s: %s", what, edata->message)));
    FreeErrorData(edata);
    ok = false;
  }
  PG_END_TRY();
  return ok;
}

PlanModel* plan_model(Node* model_arg) {
  if (!model_arg || !IsA(model_arg, Const)) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: the model is not a constant: not resolved at plan time")));
    return nullptr;
  }
  Const* c = reinterpret_cast<Const*>(model_arg);
  if (c->constisnull) return nullptr;
  bool by_name = c->consttype == TEXTOID;
  if (!by_name && (c->consttype == InvalidOid || c->consttype != model_type_oid())) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: the model reference is neither text nor flock.model")));
    return nullptr;
  }
  // A subtransaction cannot start in parallel mode (nor outside a transaction).
  if (IsInParallelMode() || !IsTransactionState()) {
    ereport(DEBUG1,
            (errmsg_internal("flock optimizer: no model resolution here (parallel mode or no transaction)")));
    return nullptr;
  }
  auto* out = static_cast<PlanModel*>(palloc0(sizeof(PlanModel)));
  out->handle = new_model_handle(CurrentMemoryContext);
  struct Work {
    PlanModel* out;
    Const* c;
    bool by_name;
    MemoryContext mcxt;
  } work = {out, c, by_name, CurrentMemoryContext};
  const bool resolved = plan_in_subtransaction(
      [](void* arg) {
        auto* w = static_cast<Work*>(arg);
        if (w->by_name) resolve_name_into(w->out, TextDatumGetCString(w->c->constvalue), w->mcxt);
        else resolve_value_into(w->out, w->c->constvalue, w->mcxt);
      },
      &work, "model not resolved at plan time");
  if (!resolved) {
    out->handle->model.reset();
    return nullptr;
  }
  return out->handle->model ? out : nullptr;
}

void plan_depends_on_models(PlannedStmt* stmt) {
  Oid ns = get_namespace_oid("flock", true);
  Oid models = OidIsValid(ns) ? get_relname_relid("models", ns) : InvalidOid;
  if (OidIsValid(models) && !list_member_oid(stmt->relationOids, models))
    stmt->relationOids = lappend_oid(stmt->relationOids, models);
  stmt->dependsOnRole = true;
}

bool plan_notes_wanted() { return collecting_depth > 0; }

void plan_note(const char* label, const char* text, const char* verbose_text) {
  if (collecting_depth == 0 || !notes_mcxt) return;
  MemoryContext old = MemoryContextSwitchTo(notes_mcxt);
  auto* note = static_cast<PlanNote*>(palloc(sizeof(PlanNote)));
  note->label = pstrdup(label);
  note->text = pstrdup(collecting_verbose && verbose_text ? verbose_text : text);
  notes = lappend(notes, note);
  MemoryContextSwitchTo(old);
}

void install_plan_notes() {
  prev_explain_one_query = ExplainOneQuery_hook;
  ExplainOneQuery_hook = explain_one_query;
}

// Whether predictions of the model are recorded (an audit policy other than 'off'), as the
// prediction functions would find it: by the resolved name, or for a flock.model value by its
// bytes' sha256. Read as the caller, like them (the policies are visible to the model's users), in
// a subtransaction: any error means "audited" (not inlined), never an error of the query.
bool plan_model_audited(Node* model_arg, const PlanModel* pm) {
  const bool by_name = exprType(model_arg) == TEXTOID;
  const char* at = strrchr(pm->label, '@');
  if (by_name && !at) return true;  // cannot tell
  const char* key = by_name ? pnstrdup(pm->label, at - pm->label) : pm->sha256;
  const char* sql = by_name ? "SELECT 1 FROM flock.audit_policies WHERE name = $1 AND mode <> 'off'"
                            : "SELECT 1 FROM flock._audit_policy_for($1)";
  struct Work {
    const char* key;
    const char* sql;
    bool audited;
  } work = {key, sql, true};
  const bool read = plan_in_subtransaction(
      [](void* arg) {
        auto* w = static_cast<Work*>(arg);
        if (SPI_connect() != SPI_OK_CONNECT) return;
        Oid argtypes[1] = {TEXTOID};
        Datum args[1] = {CStringGetTextDatum(w->key)};
        const int rc = SPI_execute_with_args(w->sql, 1, argtypes, args, nullptr, true, 1);
        w->audited = rc != SPI_OK_SELECT || SPI_processed > 0;
        SPI_finish();
      },
      &work, "audit policy not read at plan time");
  return !read || work.audited;
}

double plan_model_cost(const PlanModel* pm) {
  constexpr size_t kEntries = 256;
  static auto* costs = new std::unordered_map<std::string, double>();
  double units = -1;
  flock_guard([&] {
    try {
      auto it = costs->find(pm->sha256);
      if (it != costs->end()) {
        units = it->second;
        return;
      }
      units = flock::optimize::cost(*pm->handle->model);
      if (costs->size() >= kEntries) costs->clear();
      costs->emplace(pm->sha256, units);
    } catch (const std::bad_alloc&) {
      units = -1;  // no estimate
    }
  });
  return units;
}

}  // namespace flock::pg
