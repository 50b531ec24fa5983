// Pinned predictions (issue 18): flock.predict_pinned('ref#sha256', input) scores exactly like
// flock.predict(ref, input), but only with the version whose bytes have that sha256. Given the
// same bytes, a prediction is a function of its input alone, so the SQL functions are declared
// IMMUTABLE and postgres_fdw (server option extensions 'flock') ships them to the shards. A node
// that does not hold that exact version raises an error naming itself (flock.node_name, else
// cluster_name), never scores with another one.
#include <cstring>

#include "pg.hpp"  // must come first

extern "C" {
#include "utils/syscache.h"
}
#undef flock

#include "call_state.hpp"
#include "distribute_plan.hpp"
#include "pin_remote.hpp"
#include "pinned.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(flock_predict_pinned);
PG_FUNCTION_INFO_V1(flock_predict_proba_pinned);
PG_FUNCTION_INFO_V1(flock_predict_label_pinned);
PG_FUNCTION_INFO_V1(flock_require_pinned);
PG_FUNCTION_INFO_V1(flock_pinned_in);
}
#undef flock

namespace flock::pg {

namespace {

// What a pinned call site keeps: the scoring state and the sha256 it last verified.
struct PinnedState {
  CallState* st;
  bool verified;
  char verified_sha[kSha256HexSize];
  uint64 verified_generation;  // catalog_generation at the check
};

// How this node names itself in errors: flock.node_name (flock.distribute sets it on each shard
// to its foreign server's name), else cluster_name, else the address a client would not know.
char* node_name_setting = nullptr;

const char* node_name() {
  if (node_name_setting && *node_name_setting) return node_name_setting;
  const char* name = GetConfigOption("cluster_name", true, false);
  if (name && *name) return name;
  return "(unnamed: set flock.node_name)";
}

bool valid_sha(const char* sha) {
  if (strlen(sha) != static_cast<size_t>(kSha256HexLen)) return false;
  for (const char* p = sha; *p; ++p)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  return true;
}

// Raises unless this node holds a model version with these bytes (checked before resolving, so
// the error names the node rather than being flock._resolve's "not found").
void require_version_here(const char* ref, const char* sha) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[2] = {TEXTOID, TEXTOID};
  Datum args[2] = {CStringGetTextDatum(sha), CStringGetTextDatum(ref)};
  if (SPI_execute_with_args("SELECT flock._has_pinned($1, $2)", 2, argtypes, args, nullptr, true, 1) !=
          SPI_OK_SELECT ||
      SPI_processed != 1)
    elog(ERROR, "could not read flock.models");
  bool isnull;
  bool here = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
  SPI_finish();
  if (!here)
    ereport(ERROR,
            (errcode(ERRCODE_UNDEFINED_OBJECT),
             errmsg("node \"%s\" has no model \"%s\" with sha256 %s", node_name(), ref, sha),
             errhint("The shards' model catalog is replicated from the coordinator: wait until "
                     "flock.distribution_status() shows the shard caught up, or check its subscription.")));
}

constexpr char kPinHint[] = "A pinned model is 'name@N#sha256', as flock.pin('name') returns it.";

// 'ref#sha256' -> its two parts (palloc'd); raises on anything else.
void split_pin(const char* pin, char** ref, char** sha) {
  const char* hash = strrchr(pin, '#');
  if (!hash || hash == pin || !valid_sha(hash + 1))
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("invalid pinned model \"%s\"", pin),
                    errhint("%s", kPinHint)));
  *ref = pnstrdup(pin, static_cast<Size>(hash - pin));
  *sha = pstrdup(hash + 1);
}

// Resolves ref as flock.predict would, then refuses other bytes than sha's.
void resolve_as_pinned(CallState* st, const char* ref, const char* sha) {
  resolve_model(st, CStringGetTextDatum(ref));
  if (strcmp(st->model_sha, sha) != 0)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("model \"%s\" on node \"%s\" has sha256 %s, not the pinned %s", st->label,
                           node_name(), st->model_sha, sha),
                    errhint("Pin a version ('name@N') whose bytes have that sha256.")));
}

// The call site's state with its model resolved and verified to be the pinned one.
PinnedState* verified_state(FunctionCallInfo fcinfo, Oid input_type) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("pinned model must not be NULL"),
                    errhint("%s", kPinHint)));
  auto* ps = static_cast<PinnedState*>(fcinfo->flinfo->fn_extra);
  if (!ps) {
    ps = static_cast<PinnedState*>(MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(PinnedState)));
    ps->st = new_call_state(fcinfo->flinfo->fn_mcxt, false, input_type != FLOAT4ARRAYOID);
    fcinfo->flinfo->fn_extra = ps;
  }
  char* ref;
  char* sha;
  split_pin(TextDatumGetCString(PG_GETARG_DATUM(0)), &ref, &sha);
  bool verified =
      ps->verified && ps->verified_generation == catalog_generation && strcmp(ps->verified_sha, sha) == 0;
  if (!verified) require_version_here(ref, sha);
  resolve_as_pinned(ps->st, ref, sha);
  if (!verified) {
    strlcpy(ps->verified_sha, sha, sizeof(ps->verified_sha));
    ps->verified_generation = catalog_generation;
    ps->verified = true;
  }
  return ps;
}

Datum pinned_entry(FunctionCallInfo fcinfo, Want want) {
  PinnedState* ps = verified_state(fcinfo, get_fn_expr_argtype(fcinfo->flinfo, 1));
  if (PG_ARGISNULL(1)) PG_RETURN_NULL();  // no row, no prediction
  RowValues row = extract_row(ps->st, PG_GETARG_DATUM(1));
  Datum result;
  score_rows(ps->st, &row, 1, want, &result);
  return result;
}

}  // namespace

bool is_pinned_type(Oid type) {
  Oid ns = get_namespace_oid("flock", true);
  return OidIsValid(ns) && OidIsValid(type) &&
         type ==
             GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum("pinned"), ObjectIdGetDatum(ns));
}

void resolve_pinned(CallState* st, Datum pin) {
  char* ref;
  char* sha;
  split_pin(TextDatumGetCString(pin), &ref, &sha);
  require_version_here(ref, sha);
  resolve_as_pinned(st, ref, sha);
}

void define_pinned_gucs() {
  DefineCustomStringVariable(
      "flock.node_name", "How this node names itself in errors of pinned predictions.",
      "flock.add_shard sets it on each shard's database to the shard's foreign server name; "
      "empty: cluster_name.",
      &node_name_setting, "", PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "flock.pin_remote",
      "Pin predictions in the quals of queries over foreign tables, so postgres_fdw ships them.",
      "flock.predict*(ref, float4[] of columns) becomes flock.predict*_pinned of the version ref "
      "resolves to now.",
      &pin_remote_predictions, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "flock.distribute_aggregates",
      "Plan aggregates of predictions over a distributed table as partial aggregates on the shards.",
      "sum / count / min / max, grouped by columns, through flock.on_shards.", &distribute_aggregates, true,
      PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomBoolVariable(
      "flock.distribute_predictions",
      "Score predictions of a distributed table's rows on the shards (select lists, INSERT ... SELECT, "
      "CREATE TABLE AS).",
      "The table's scan and WHERE become one query per shard that returns the columns used and the "
      "pinned predictions (read with dblink_get_result); the rest of the query runs on the coordinator.",
      &distribute_predictions, true, PGC_USERSET, 0, nullptr, nullptr, nullptr);
}

}  // namespace flock::pg

using namespace flock::pg;

Datum flock_predict_pinned(PG_FUNCTION_ARGS) { return pinned_entry(fcinfo, Want::Value); }
Datum flock_predict_proba_pinned(PG_FUNCTION_ARGS) { return pinned_entry(fcinfo, Want::Proba); }
Datum flock_predict_label_pinned(PG_FUNCTION_ARGS) { return pinned_entry(fcinfo, Want::Label); }
// Input of flock.pinned: text in the form 'name@N#sha256' (its representation is text's).
Datum flock_pinned_in(PG_FUNCTION_ARGS) {
  const char* pin = PG_GETARG_CSTRING(0);
  char* ref;
  char* sha;
  split_pin(pin, &ref, &sha);
  PG_RETURN_TEXT_P(cstring_to_text(pin));
}

Datum flock_require_pinned(PG_FUNCTION_ARGS) {
  verified_state(fcinfo, FLOAT4ARRAYOID);
  PG_RETURN_BOOL(true);
}
