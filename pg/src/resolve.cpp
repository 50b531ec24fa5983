// Resolving a call site's model reference: a name through the catalog (flock._resolve, which
// raises the not-found errors) or a flock.model value, to a compiled model from the per-backend
// cache (cache.cpp), with the model's audit policy. Per call site, fn_extra keeps the result, so a
// query resolves once, not per row; catalog changes (any backend) are seen through
// catalog_generation.
#include "pg.hpp"  // must come first

#include <cstring>
#include <string>

#include "call_state.hpp"
#include "guard.hpp"

extern "C" {
#include "utils/hsearch.h"
}
#undef flock

namespace flock::pg {

CallState* new_call_state(MemoryContext mcxt, bool model_is_value, bool input_is_record) {
  auto* st = static_cast<CallState*>(MemoryContextAllocZero(mcxt, sizeof(CallState)));
  st->mcxt = mcxt;
  st->model_is_value = model_is_value;
  st->input_is_record = input_is_record;
  return st;
}

CallState* call_state(FunctionCallInfo fcinfo) {
  auto* st = static_cast<CallState*>(fcinfo->flinfo->fn_extra);
  if (st) return st;
  Oid arg0 = get_fn_expr_argtype(fcinfo->flinfo, 0);
  Oid arg1 = get_fn_expr_argtype(fcinfo->flinfo, 1);
  st = new_call_state(fcinfo->flinfo->fn_mcxt, arg0 != TEXTOID && arg0 != InvalidOid && arg0 != UNKNOWNOID,
                      arg1 != FLOAT4ARRAYOID);
  fcinfo->flinfo->fn_extra = st;
  return st;
}

namespace {

void set_model(CallState* st, MemoryContext mcxt, const std::shared_ptr<const flock::Model>& m);

void set_policy(CallState* st, const char* name, int version, const char* mode, const char* rate,
                const char* durability) {
  st->audit_mode = AuditMode::Off;
  st->audit_rate = 0;
  st->audit_sync = durability && strcmp(durability, "sync") == 0;
  if (mode && strcmp(mode, "all") == 0) st->audit_mode = AuditMode::All;
  else if (mode && strcmp(mode, "sample") == 0) st->audit_mode = AuditMode::Sample;
  if (rate) st->audit_rate = strtod(rate, nullptr);
  st->audit_version = version;
  strlcpy(st->audit_model, name ? name : "", NAMEDATALEN);
}

// Audit policies of model values, by sha256: a flock.model read from the catalog (or a copy of one)
// is audited like its name. Cached per backend, dropped with every catalog invalidation.
struct ValuePolicy {
  char sha[kSha256HexSize];
  uint64 generation;
  AuditMode mode;
  double rate;
  bool sync;
  int32 version;
  char name[NAMEDATALEN];
};
HTAB* value_policies = nullptr;

void refresh_value_policy(CallState* st) {
  if (st->audit_generation == catalog_generation && st->audit_generation != 0) return;
  if (!value_policies) {
    HASHCTL ctl;
    memset(&ctl, 0, sizeof(ctl));
    ctl.keysize = kSha256HexSize;
    ctl.entrysize = sizeof(ValuePolicy);
    ctl.hcxt = TopMemoryContext;
    value_policies = hash_create("flock value audit policies", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
  }
  bool found;
  auto* e = static_cast<ValuePolicy*>(hash_search(value_policies, st->value_sha, HASH_ENTER, &found));
  if (!found || e->generation != catalog_generation) {
    uint64 generation = catalog_generation;
    e->mode = AuditMode::Off;
    e->rate = 0;
    e->sync = false;
    e->version = 0;
    e->name[0] = '\0';
    e->generation = 0;  // not valid until the lookup succeeds
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    Oid argtypes[1] = {TEXTOID};
    Datum args[1] = {CStringGetTextDatum(st->value_sha)};
    int rc = SPI_execute_with_args("SELECT name, version, mode, sample_rate, durable FROM flock._audit_policy_for($1)", 1,
                                   argtypes, args, nullptr, true, 1);
    if (rc != SPI_OK_SELECT) elog(ERROR, "could not read the audit policy of a model value");
    if (SPI_processed == 1) {
      HeapTuple row = SPI_tuptable->vals[0];
      TupleDesc desc = SPI_tuptable->tupdesc;
      const char* mode = SPI_getvalue(row, desc, 3);
      e->mode = strcmp(mode, "all") == 0 ? AuditMode::All : strcmp(mode, "sample") == 0 ? AuditMode::Sample : AuditMode::Off;
      e->rate = strtod(SPI_getvalue(row, desc, 4), nullptr);
      const char* durable = SPI_getvalue(row, desc, 5);
      e->sync = durable && durable[0] == 't';
      e->version = atoi(SPI_getvalue(row, desc, 2));
      strlcpy(e->name, SPI_getvalue(row, desc, 1), NAMEDATALEN);
    }
    SPI_finish();
    e->generation = generation;
  }
  st->audit_mode = e->mode;
  st->audit_rate = e->rate;
  st->audit_sync = e->sync;
  st->audit_version = e->version;
  strlcpy(st->audit_model, e->name, NAMEDATALEN);
  st->audit_generation = e->generation;
}

// Resolves a name reference through flock._resolve() (which raises the not-found errors).
void resolve_by_name(CallState* st, Datum model_arg) {
  char* ref = TextDatumGetCString(model_arg);
  if (st->model && st->generation == catalog_generation && st->ref && strcmp(st->ref, ref) == 0) return;

  MemoryContext fn_mcxt = st->mcxt;
  uint64 generation = catalog_generation;
  cache_stats.resolutions++;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {TEXTOID};
  Datum args[1] = {CStringGetTextDatum(ref)};
  // The audit policy comes with the resolution: no extra lookup per query, and the same catalog
  // invalidation refreshes both.
  int rc = SPI_execute_with_args(
      "SELECT r.name, r.version, r.sha256, NULL, p.mode, p.sample_rate, p.durability "
      "FROM flock._resolve($1) r LEFT JOIN flock.audit_policies p ON p.name = r.name",
      1, argtypes, args, nullptr, true, 1);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "could not resolve model \"%s\"", ref);
  HeapTuple row = SPI_tuptable->vals[0];
  TupleDesc desc = SPI_tuptable->tupdesc;
  char* name = SPI_getvalue(row, desc, 1);
  char* version = SPI_getvalue(row, desc, 2);
  char* sha = SPI_getvalue(row, desc, 3);
  char* audit_mode = SPI_getvalue(row, desc, 5);
  char* audit_rate = SPI_getvalue(row, desc, 6);
  char* audit_durability = SPI_getvalue(row, desc, 7);

  ModelHandle* handle = new_model_handle(CurrentMemoryContext);  // SPI context: freed at SPI_finish
  flock_guard([&] { handle->model = find_cached_model(sha); });
  if (!handle->model) {
    // Not cached yet: only now read the bytes (flock._resolve leaves them out).
    Oid key_types[2] = {TEXTOID, INT4OID};
    Datum key[2] = {CStringGetTextDatum(name), Int32GetDatum(atoi(version))};
    if (SPI_execute_with_args("SELECT model FROM flock.models WHERE name = $1 AND version = $2", 2, key_types, key,
                              nullptr, true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "model \"%s@%s\" vanished while it was being loaded", name, version);
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    bytea* bytes = DatumGetByteaPP(d);  // detoasts
    flock_guard([&] {
      handle->model = cached_model(sha, {reinterpret_cast<const uint8_t*>(VARDATA_ANY(bytes)), VARSIZE_ANY_EXHDR(bytes)});
    });
  }
  set_model(st, fn_mcxt, handle->model);
  strlcpy(st->model_sha, sha, sizeof(st->model_sha));
  st->ref = MemoryContextStrdup(fn_mcxt, ref);
  st->label = MemoryContextStrdup(fn_mcxt, psprintf("%s@%s", name, version));
  st->generation = generation;
  set_policy(st, name, atoi(version), audit_mode, audit_rate, audit_durability);
  if (models_relid == InvalidOid) {
    Oid ns = get_namespace_oid("flock", true);
    if (OidIsValid(ns)) models_relid = get_relname_relid("models", ns);
  }
  SPI_finish();
}

// Resolves a flock.model value, recognising the same value again cheaply (TOAST identity, or bytes).
void resolve_by_value(CallState* st, Datum model_arg) {
  struct varlena* raw = reinterpret_cast<struct varlena*>(DatumGetPointer(model_arg));
  bool ondisk = VARATT_IS_EXTERNAL_ONDISK(raw);
  struct varatt_external ptr = {};
  if (ondisk) {
    VARATT_EXTERNAL_GET_POINTER(ptr, raw);
    if (st->model && st->toast_relid == ptr.va_toastrelid && st->toast_valueid == ptr.va_valueid) {
      refresh_value_policy(st);
      return;
    }
  }
  bytea* bytes = DatumGetByteaPP(model_arg);
  size_t len = VARSIZE_ANY_EXHDR(bytes);
  if (!ondisk && st->model && st->inline_value && VARSIZE_ANY_EXHDR(st->inline_value) == len &&
      memcmp(VARDATA_ANY(st->inline_value), VARDATA_ANY(bytes), len) == 0) {
    refresh_value_policy(st);
    return;
  }

  MemoryContext fn_mcxt = st->mcxt;
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(bytes)), len, sha);
  ModelHandle* handle = new_model_handle(CurrentMemoryContext);
  flock_guard([&] { handle->model = cached_model(sha, {reinterpret_cast<const uint8_t*>(VARDATA_ANY(bytes)), len}); });
  set_model(st, fn_mcxt, handle->model);
  st->label = MemoryContextStrdup(fn_mcxt, psprintf("model %.12s", sha));
  st->toast_relid = ondisk ? ptr.va_toastrelid : InvalidOid;
  st->toast_valueid = ondisk ? ptr.va_valueid : InvalidOid;
  if (st->inline_value) pfree(st->inline_value);
  st->inline_value = nullptr;
  if (!ondisk) {
    st->inline_value = static_cast<bytea*>(MemoryContextAlloc(fn_mcxt, VARHDRSZ + len));
    SET_VARSIZE(st->inline_value, VARHDRSZ + len);
    memcpy(VARDATA(st->inline_value), VARDATA_ANY(bytes), len);
  }
  memcpy(st->value_sha, sha, sizeof(st->value_sha));
  memcpy(st->model_sha, sha, sizeof(st->model_sha));
  st->audit_generation = 0;
  refresh_value_policy(st);
}

void set_model(CallState* st, MemoryContext mcxt, const std::shared_ptr<const flock::Model>& m) {
  if (!st->handle) st->handle = new_model_handle(mcxt);
  st->handle->model = m;  // no allocation that can elog: shared_ptr copy
  st->model = m.get();
}

void check_bindable(CallState* st) {
  if (st->model->signature().inputs.empty())
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("%s takes no inputs", st->label),
                    errhint("flock.predict scores models that take features.")));
  for (const auto& in : st->model->signature().inputs) {
    if (in.width < 0)
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("%s input \"%s\" has a symbolic dimension past the batch dimension, so it cannot bind "
                             "to a row of features", st->label, in.name.c_str()),
                      errhint("Export the model with fixed feature dimensions; only the first (batch) dimension may "
                              "be dynamic.")));
  }
}

}  // namespace

void resolve_model(CallState* st, Datum model_arg) {
  if (st->model_is_value) resolve_by_value(st, model_arg);
  else resolve_by_name(st, model_arg);
  check_bindable(st);
}

const char* model_label(const CallState* st) { return st->label; }

}  // namespace flock::pg
