// flock.predict / predict_proba / predict_label: resolve the model (by name through the catalog,
// or from a model value), bind the input (record by column name, or float4[] by position), score.
//
// Per call site, fn_extra keeps the resolved model and the record binding, so a query resolves and
// binds once, not per row; catalog changes (any backend) are seen through catalog_generation.
#include "pg.hpp"  // must come first

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "audit.hpp"
#include "cache.hpp"
#include "guard.hpp"
#include "predict.hpp"

#include "flock/interrupt.hpp"

extern "C" {
#include "common/pg_prng.h"
#include "utils/backend_status.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
}
#undef flock

extern "C" {
PG_FUNCTION_INFO_V1(flock_predict);
PG_FUNCTION_INFO_V1(flock_predict_proba);
PG_FUNCTION_INFO_V1(flock_predict_label);
PG_FUNCTION_INFO_V1(flock_predict_tensor);
}

namespace flock::pg {

namespace {

// How one model feature is read from the record.
enum class Conv : uint8 { Float4, Float8, Int2, Int4, Int8, Numeric, Bool, Text, ViaOutput, Unsupported };

struct FeatureBinding {
  int attno;   // 0-based column of the record
  Conv conv;
  Oid typoutput;  // for ViaOutput
};

}  // namespace

// Everything a call site caches across rows. Palloc'd in fn_mcxt; POD but for the handle.
struct CallState {
  MemoryContext mcxt;   // lives as long as the call site (fn_mcxt, or the executor's query context)
  bool model_is_value;  // arg 0 is flock.model (else text)
  bool input_is_record; // arg 1 is a record (else float4[])

  // Resolution of arg 0.
  uint64 generation;
  char* ref;               // name reference the model was resolved for
  char* label;             // "name@version" or "model <sha prefix>", for messages
  Oid toast_relid;         // model value stored out of line: its TOAST identity
  Oid toast_valueid;
  bytea* inline_value;     // model value stored inline: a copy to compare
  ModelHandle* handle;
  const flock::Model* model;

  // Binding of a record type to the model's features.
  Oid rec_type;
  int32 rec_typmod;
  const flock::Model* bound_model;
  TupleDesc rec_desc;
  int nfeatures;           // total over inputs
  FeatureBinding* binds;

  // Audit policy of the resolved model (flock.audit_policies), refreshed with the resolution.
  AuditMode audit_mode;
  double audit_rate;
  bool audit_sync;                  // the policy's durability is 'sync'
  int32 audit_version;
  uint64 audit_generation;          // model values: catalog generation the policy was read at
  char audit_model[NAMEDATALEN];
  char value_sha[65];               // model values: their sha256
  // The model's feature names and kinds as audit records carry them (built on first capture).
  const flock::Model* audit_for;
  char* audit_names;
  int audit_names_len;
  int audit_nfeat;
  uint8* audit_is_text;
  int16 audit_flags;
  Oid audit_role_id;
  char audit_role[NAMEDATALEN];
};

namespace {


}  // namespace

CallState* new_call_state(MemoryContext mcxt, bool model_is_value, bool input_is_record) {
  auto* st = static_cast<CallState*>(MemoryContextAllocZero(mcxt, sizeof(CallState)));
  st->mcxt = mcxt;
  st->model_is_value = model_is_value;
  st->input_is_record = input_is_record;
  return st;
}

namespace {

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
  char sha[65];
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
    ctl.keysize = 65;
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
  char sha[65];
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
  st->audit_generation = 0;
  refresh_value_policy(st);
}

void set_model(CallState* st, MemoryContext mcxt, const std::shared_ptr<const flock::Model>& m) {
  if (!st->handle) st->handle = new_model_handle(mcxt);
  st->handle->model = m;  // no allocation that can elog: shared_ptr copy
  st->model = m.get();
}

Conv conv_for(Oid type) {
  switch (type) {
    case FLOAT4OID: return Conv::Float4;
    case FLOAT8OID: return Conv::Float8;
    case INT2OID: return Conv::Int2;
    case INT4OID: return Conv::Int4;
    case INT8OID: return Conv::Int8;
    case NUMERICOID: return Conv::Numeric;
    case BOOLOID: return Conv::Bool;
    case TEXTOID: case VARCHAROID: case BPCHAROID: return Conv::Text;
    default: return Conv::Unsupported;
  }
}

const char* feature_list(const flock::Signature& sig) {
  StringInfoData buf;
  initStringInfo(&buf);
  for (size_t k = 0; k < sig.feature_names.size() && k < 40; ++k)
    appendStringInfo(&buf, "%s%s", k ? ", " : "", sig.feature_names[k].c_str());
  if (sig.feature_names.size() > 40) appendStringInfoString(&buf, ", ...");
  return buf.data;
}

int find_column(TupleDesc desc, const char* name) {
  int ci_match = -1, ci_count = 0;
  for (int a = 0; a < desc->natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    if (att->attisdropped) continue;
    if (strcmp(NameStr(att->attname), name) == 0) return a;
    if (pg_strcasecmp(NameStr(att->attname), name) == 0) {
      ci_match = a;
      ci_count++;
    }
  }
  return ci_count == 1 ? ci_match : -1;
}

// Binds the record's columns to the model's features: by name where the model has names, else
// by column order. Errors name the missing column or the mismatched type; when `probe`, a record
// that does not bind returns false instead (nothing bound), and binding it again raises the error.
bool bind_record(CallState* st, MemoryContext mcxt, Oid rec_type, int32 rec_typmod, bool probe = false) {
  if (st->binds && st->bound_model == st->model && st->rec_type == rec_type && st->rec_typmod == rec_typmod)
    return true;
  const flock::Signature& sig = st->model->signature();
  TupleDesc desc = lookup_rowtype_tupdesc(rec_type, rec_typmod);
  TupleDesc copy = CreateTupleDescCopy(desc);
  ReleaseTupleDesc(desc);
  desc = copy;

  int total = 0;
  for (const auto& in : sig.inputs) total += static_cast<int>(in.width);
  auto* binds = static_cast<FeatureBinding*>(palloc0(sizeof(FeatureBinding) * std::max(total, 1)));
  bool single = sig.inputs.size() == 1;
  bool by_name = !single || !sig.feature_names.empty();

  int live = 0;
  for (int a = 0; a < desc->natts; ++a) live += !TupleDescAttr(desc, a)->attisdropped;
  if (!by_name && live != total) {
    if (probe) return false;
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s takes %d features, the record has %d columns", st->label, total, live),
                    errdetail("The model carries no feature names, so the record's columns bind in their order."),
                    errhint("Pass exactly the model's features, in order, e.g. flock.predict(m, (a, b, c)), or "
                            "register the model with features => ARRAY[...].")));
  }

  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    const flock::InputSpec& in = sig.inputs[k];
    if (!single && in.width != 1) {
      if (probe) return false;
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("%s input \"%s\" takes %ld values per row; a record column gives one", st->label,
                             in.name.c_str(), static_cast<long>(in.width))));
    }
    for (int64_t j = 0; j < in.width; ++j, ++f) {
      int attno;
      const char* fname = nullptr;
      if (by_name) {
        fname = single ? sig.feature_names[j].c_str() : in.name.c_str();
        attno = find_column(desc, fname);
        if (attno < 0 && probe) return false;
        if (attno < 0)
          ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                          errmsg("column \"%s\" is missing from the input record", fname),
                          errdetail("%s binds its features by name: %s.", st->label, feature_list(sig)),
                          errhint("Select the column under that name (expression AS \"%s\"), or pass the "
                                  "features as a float4[] in model order.", fname)));
      } else {
        attno = -1;
        for (int a = 0, seen = 0; a < desc->natts; ++a) {
          if (TupleDescAttr(desc, a)->attisdropped) continue;
          if (seen++ == f) {
            attno = a;
            break;
          }
        }
      }
      Form_pg_attribute att = TupleDescAttr(desc, attno);
      Conv conv = conv_for(att->atttypid);
      Oid typoutput = InvalidOid;
      bool string_input = in.type == flock::ElemType::String;
      if (string_input && conv != Conv::Text) {
        bool varlena;
        getTypeOutputInfo(att->atttypid, &typoutput, &varlena);
        conv = Conv::ViaOutput;
      }
      if (!string_input && (conv == Conv::Text || conv == Conv::Unsupported) && probe) return false;
      if (!string_input && (conv == Conv::Text || conv == Conv::Unsupported))
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("column \"%s\" has type %s, but %s takes a number for it", NameStr(att->attname),
                               format_type_be(att->atttypid), st->label),
                        errhint("Cast it in the query, e.g. (%s)::float8 AS %s, or encode it as a number.",
                                NameStr(att->attname), NameStr(att->attname))));
      binds[f] = {attno, conv, typoutput};
    }
  }
  MemoryContext old = MemoryContextSwitchTo(mcxt);
  FeatureBinding* kept = static_cast<FeatureBinding*>(palloc(sizeof(FeatureBinding) * std::max(total, 1)));
  memcpy(kept, binds, sizeof(FeatureBinding) * total);
  TupleDesc kept_desc = CreateTupleDescCopy(desc);
  MemoryContextSwitchTo(old);
  if (st->binds) pfree(st->binds);
  if (st->rec_desc) FreeTupleDesc(st->rec_desc);
  st->binds = kept;
  st->rec_desc = kept_desc;
  st->nfeatures = total;
  st->rec_type = rec_type;
  st->rec_typmod = rec_typmod;
  st->bound_model = st->model;
  return true;
}



double numeric_value(Datum d, Conv conv) {
  switch (conv) {
    case Conv::Float4: return DatumGetFloat4(d);
    case Conv::Float8: return DatumGetFloat8(d);
    case Conv::Int2: return DatumGetInt16(d);
    case Conv::Int4: return DatumGetInt32(d);
    case Conv::Int8: return static_cast<double>(DatumGetInt64(d));
    case Conv::Numeric: return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
    case Conv::Bool: return DatumGetBool(d) ? 1.0 : 0.0;
    default: return NAN;
  }
}

RowValues row_from_columns(CallState* st, const Datum* values, const bool* nulls);

RowValues extract_record(CallState* st, Datum input) {
  HeapTupleHeader th = DatumGetHeapTupleHeader(input);
  bind_record(st, st->mcxt, HeapTupleHeaderGetTypeId(th), HeapTupleHeaderGetTypMod(th));
  TupleDesc desc = st->rec_desc;
  HeapTupleData tuple;
  tuple.t_len = HeapTupleHeaderGetDatumLength(th);
  ItemPointerSetInvalid(&tuple.t_self);
  tuple.t_tableOid = InvalidOid;
  tuple.t_data = th;
  Datum* values = static_cast<Datum*>(palloc(sizeof(Datum) * desc->natts));
  bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * desc->natts));
  heap_deform_tuple(&tuple, desc, values, nulls);
  return row_from_columns(st, values, nulls);
}

// The bound features of one row whose columns (in the bound row type's order) are values/nulls.
RowValues row_from_columns(CallState* st, const Datum* values, const bool* nulls) {
  RowValues row = {st->nfeatures, static_cast<double*>(palloc(sizeof(double) * st->nfeatures)),
                   static_cast<char**>(palloc0(sizeof(char*) * st->nfeatures)),
                   static_cast<bool*>(palloc(sizeof(bool) * st->nfeatures))};
  for (int f = 0; f < st->nfeatures; ++f) {
    const FeatureBinding& b = st->binds[f];
    row.isnull[f] = nulls[b.attno];
    row.num[f] = NAN;
    if (row.isnull[f]) continue;
    Datum d = values[b.attno];
    if (b.conv == Conv::Text) row.str[f] = TextDatumGetCString(d);
    else if (b.conv == Conv::ViaOutput) row.str[f] = OidOutputFunctionCall(b.typoutput, d);
    else row.num[f] = numeric_value(d, b.conv);
  }
  return row;
}

RowValues extract_array(CallState* st, Datum input) {
  const flock::Signature& sig = st->model->signature();
  if (sig.inputs.size() != 1 || sig.inputs[0].type == flock::ElemType::String)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                    errmsg("%s takes named inputs (%s), not a feature array", st->label, feature_list(sig)),
                    errhint("Pass a record whose columns carry those names, e.g. flock.predict('%s', t) FROM t.",
                            st->ref ? st->ref : "model")));
  ArrayType* arr = DatumGetArrayTypeP(input);
  Datum* elems;
  bool* nulls;
  int n;
  deconstruct_array(arr, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT, &elems, &nulls, &n);
  if (n != sig.inputs[0].width)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s takes %ld features, the array has %d", st->label,
                           static_cast<long>(sig.inputs[0].width), n),
                    sig.feature_names.empty() ? 0 : errdetail("Features in order: %s.", feature_list(sig)),
                    errhint("Pass one value per feature, in the model's order.")));
  RowValues row = {n, static_cast<double*>(palloc(sizeof(double) * std::max(n, 1))),
                   static_cast<char**>(palloc0(sizeof(char*) * std::max(n, 1))),
                   static_cast<bool*>(palloc(sizeof(bool) * std::max(n, 1)))};
  for (int k = 0; k < n; ++k) {
    row.isnull[k] = nulls[k];
    row.num[k] = nulls[k] ? NAN : DatumGetFloat4(elems[k]);
  }
  return row;
}

// Whether the features of model input k may be NULL: only where the model has missing-value
// semantics (trees, imputers).
bool null_allowed(const flock::Signature& sig, size_t k) {
  return sig.inputs[k].type != flock::ElemType::String && sig.inputs[k].type != flock::ElemType::Int64 &&
         sig.input_accepts_missing[k];
}

// The error for a NULL in feature f (feature j of input k) where the model does not allow one.
void null_feature_error(CallState* st, int f, size_t k, int64_t j) {
  const flock::Signature& sig = st->model->signature();
  const char* fname = sig.inputs.size() == 1
                          ? (sig.feature_names.empty() ? psprintf("%d", f + 1) : sig.feature_names[j].c_str())
                          : sig.inputs[k].name.c_str();
  ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                  errmsg("feature \"%s\" is NULL and %s has no missing-value handling for it", fname, st->label),
                  errhint("Filter or COALESCE the NULLs in the query, or use a model that handles missing values "
                          "(tree ensembles, or a pipeline with an imputer).")));
}

void check_nulls(CallState* st, const RowValues& row) {
  const flock::Signature& sig = st->model->signature();
  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    for (int64_t j = 0; j < sig.inputs[k].width; ++j, ++f) {
      if (row.isnull[f] && !null_allowed(sig, k)) null_feature_error(st, f, k, j);
    }
  }
}

// What the C++ side hands back, in malloc'd buffers (no PostgreSQL allocation under the guard).
struct Scored {
  int rows;
  double* values;   // Value: one per row
  char** labels;    // Label: one malloc'd string per row
  double* numbers;  // Proba: rows x width probabilities; Tensor: rows x width output values
  int width;
  int ndims;        // Tensor: the output's dimensions past the batch
  int dims[MAXDIM];
};

void free_scored(Scored& s) {
  std::free(s.values);
  if (s.labels)
    for (int r = 0; r < s.rows; ++r) std::free(s.labels[r]);
  std::free(s.labels);
  std::free(s.numbers);
}

template <typename T>
T* malloc_array(size_t n) {
  auto* p = static_cast<T*>(std::calloc(std::max<size_t>(n, 1), sizeof(T)));
  if (!p) throw std::bad_alloc();
  return p;
}

void run_batch(const flock::Model* model, const char* label, const flock::FeatureBatch& batch, Want want,
               Scored& out);

// Scores `n` rows in one model call.
Scored score(CallState* st, const RowValues* rows, int n, Want want) {
  Scored out = {n, nullptr, nullptr, nullptr, 0, 0, {}};
  const flock::Model* model = st->model;
  const char* label = st->label;
  flock_guard([&] {
    const flock::Signature& sig = model->signature();
    flock::FeatureBatch batch;
    batch.rows = n;
    int offset = 0;
    for (const auto& in : sig.inputs) {
      flock::Tensor t(in.type, {n, in.width});
      for (int r = 0; r < n; ++r) {
        if (r % 1024 == 0) flock::poll_interrupt();  // a large batch's rows are scattered in memory
        const RowValues& row = rows[r];
        for (int64_t j = 0; j < in.width; ++j) {
          size_t dst = static_cast<size_t>(r * in.width + j);
          int f = offset + static_cast<int>(j);
          switch (in.type) {
            case flock::ElemType::Float: t.f[dst] = static_cast<float>(row.num[f]); break;
            case flock::ElemType::Double: t.d[dst] = row.num[f]; break;
            case flock::ElemType::Int64:
              if (row.num[f] != std::nearbyint(row.num[f]))
                flock::fail(flock::ErrorCode::InvalidInput,
                            fmt::format("{} input '{}' takes whole numbers, got {}", label, in.name, row.num[f]));
              t.i[dst] = static_cast<int64_t>(row.num[f]);
              break;
            case flock::ElemType::String: t.s[dst] = row.str[f] ? row.str[f] : ""; break;
            case flock::ElemType::Bool: t.b[dst] = row.num[f] != 0; break;
          }
        }
      }
      offset += static_cast<int>(in.width);
      batch.inputs.push_back(std::move(t));
    }
    run_batch(model, label, batch, want, out);
  });
  return out;
}

// Runs the model on a batch of out.rows rows and keeps what `want` asks for in `out`. C++: call
// inside flock_guard.
void run_batch(const flock::Model* model, const char* label, const flock::FeatureBatch& batch, Want want,
               Scored& out) {
  const flock::Signature& sig = model->signature();
  int n = out.rows;
  if (want == Want::Tensor) {
    std::vector<flock::Tensor> outputs = model->run(batch);
    // The first float output; else the first output that has numbers.
    const flock::Tensor* chosen = nullptr;
    for (const auto& t : outputs)
      if (!chosen && (t.type == flock::ElemType::Float || t.type == flock::ElemType::Double)) chosen = &t;
    for (const auto& t : outputs)
      if (!chosen && t.type != flock::ElemType::String) chosen = &t;
    if (!chosen)
      flock::fail(flock::ErrorCode::TypeMismatch, fmt::format("{} has no numeric output", label),
                  "Use flock.predict_label for text outputs.");
    int rank = static_cast<int>(chosen->shape.size());
    if (rank - 1 > MAXDIM) flock::fail(flock::ErrorCode::LimitExceeded, "output tensor has too many dimensions");
    size_t total = chosen->size();
    out.width = n ? static_cast<int>(total / static_cast<size_t>(n)) : 0;
    out.ndims = rank <= 1 ? 1 : rank - 1;
    if (rank <= 1) out.dims[0] = out.width;
    else
      for (int d = 1; d < rank; ++d) out.dims[d - 1] = static_cast<int>(chosen->shape[d]);
    out.numbers = malloc_array<double>(total);
    for (size_t k = 0; k < total; ++k) out.numbers[k] = chosen->as_double(k);
    return;
  }
  flock::Prediction p = model->predict(batch, want == Want::Value   ? flock::kPredictValues
                                              : want == Want::Label ? flock::kPredictLabels
                                                                    : flock::kPredictProba);
  if (want == Want::Value) {
    if (sig.task == flock::Task::Classification && !sig.numeric_labels)
      flock::fail(flock::ErrorCode::TypeMismatch,
                  fmt::format("{} has text class labels; flock.predict returns a number", label),
                  "Use flock.predict_label for the label, or flock.predict_proba for class probabilities.");
    out.values = malloc_array<double>(static_cast<size_t>(n));
    std::memcpy(out.values, p.values.data(), sizeof(double) * static_cast<size_t>(n));
  } else if (want == Want::Label) {
    if (sig.task != flock::Task::Classification)
      flock::fail(flock::ErrorCode::TypeMismatch, fmt::format("{} is a regressor; it has no class label", label),
                  "Use flock.predict for its value.");
    out.labels = malloc_array<char*>(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      out.labels[r] = strdup(p.labels[static_cast<size_t>(r)].c_str());
      if (!out.labels[r]) throw std::bad_alloc();
    }
  } else {
    if (sig.task != flock::Task::Classification || p.n_classes == 0)
      flock::fail(flock::ErrorCode::TypeMismatch,
                  fmt::format("{} is a regressor; it has no class probabilities", label),
                  "Use flock.predict for its value.");
    out.width = static_cast<int>(p.n_classes);
    out.numbers = malloc_array<double>(p.proba.size());
    std::memcpy(out.numbers, p.proba.data(), sizeof(double) * p.proba.size());
  }
}

Datum result_datum(const Scored& s, int r, Want want) {
  switch (want) {
    case Want::Value: return Float8GetDatum(s.values[r]);
    case Want::Label: return PointerGetDatum(cstring_to_text(s.labels[r]));
    case Want::Proba: {
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * std::max(s.width, 1)));
      for (int k = 0; k < s.width; ++k) elems[k] = Float8GetDatum(s.numbers[r * s.width + k]);
      return PointerGetDatum(construct_array(elems, s.width, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    }
    case Want::Tensor: {
      if (s.width == 0) return PointerGetDatum(construct_empty_array(FLOAT4OID));
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * s.width));
      for (int k = 0; k < s.width; ++k) elems[k] = Float4GetDatum(static_cast<float4>(s.numbers[r * s.width + k]));
      int lbs[MAXDIM];
      int dims[MAXDIM];
      for (int d = 0; d < s.ndims; ++d) {
        lbs[d] = 1;
        dims[d] = s.dims[d];
      }
      return PointerGetDatum(construct_md_array(elems, nullptr, s.ndims, dims, lbs, FLOAT4OID, sizeof(float4), true,
                                                TYPALIGN_INT));
    }
  }
  return (Datum)0;
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

Datum predict_entry(FunctionCallInfo fcinfo, Want want) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  if (PG_ARGISNULL(1)) PG_RETURN_NULL();  // no row, no prediction
  CallState* st = call_state(fcinfo);
  resolve_model(st, PG_GETARG_DATUM(0));
  RowValues row = extract_row(st, PG_GETARG_DATUM(1));
  Datum result;
  score_rows(st, &row, 1, want, &result);
  return result;
}

// The feature names and kinds of st->model, as audit records carry them.
void audit_describe(CallState* st) {
  if (st->audit_for == st->model) return;
  const flock::Signature& sig = st->model->signature();
  int nfeat = 0;
  for (const auto& in : sig.inputs) nfeat += static_cast<int>(in.width);
  bool single = sig.inputs.size() == 1;
  bool named = !single || static_cast<int>(sig.feature_names.size()) == nfeat;
  StringInfoData names;
  initStringInfo(&names);
  uint8* is_text = static_cast<uint8*>(MemoryContextAllocZero(st->mcxt, Max(nfeat, 1)));
  int f = 0;
  int16 flags = kAuditInputFloat4;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    flock::ElemType type = sig.inputs[k].type;
    if (type != flock::ElemType::String && type != flock::ElemType::Float) flags &= ~kAuditInputFloat4;
    for (int64_t j = 0; j < sig.inputs[k].width; ++j, ++f) {
      is_text[f] = type == flock::ElemType::String;
      if (named) {
        const std::string& name = single ? sig.feature_names[static_cast<size_t>(j)] : sig.inputs[k].name;
        appendBinaryStringInfo(&names, name.c_str(), static_cast<int>(name.size()) + 1);
      }
    }
  }
  st->audit_names = static_cast<char*>(MemoryContextAlloc(st->mcxt, Max(names.len, 1)));
  memcpy(st->audit_names, names.data, names.len);
  st->audit_names_len = names.len;
  pfree(names.data);
  st->audit_nfeat = nfeat;
  st->audit_is_text = is_text;
  st->audit_flags = flags;
  st->audit_for = st->model;
}

// The audit records of a scored batch (the sampled rows, split to fit the queue), palloc'd.
List* audit_records(CallState* st, const RowValues* rows, int n, Want want, const Scored& s) {
  audit_describe(st);
  int* sel = static_cast<int*>(palloc(sizeof(int) * n));
  int nsel = 0;
  for (int r = 0; r < n; ++r)
    if (st->audit_mode == AuditMode::All || pg_prng_double(&pg_global_prng_state) < st->audit_rate) sel[nsel++] = r;
  if (nsel == 0) return NIL;

  Oid role = GetOuterUserId();  // the session's role, not a SECURITY DEFINER function's owner
  if (role != st->audit_role_id) {
    strlcpy(st->audit_role, GetUserNameFromId(role, false), NAMEDATALEN);
    st->audit_role_id = role;
  }
  int nfeat = st->audit_nfeat;
  int width = want == Want::Label ? 0 : want == Want::Value ? 1 : s.width;
  const uint8* is_text = st->audit_is_text;
  AuditRecord tmpl;
  memset(&tmpl, 0, sizeof(tmpl));
  tmpl.want = static_cast<int16>(want);
  tmpl.flags = static_cast<int16>(st->audit_flags | (st->audit_sync ? kAuditSync : 0));
  tmpl.model_version = st->audit_version;
  tmpl.nfeat = nfeat;
  tmpl.out_width = width;
  tmpl.names_len = st->audit_names_len;
  tmpl.query_id = static_cast<int64>(pgstat_get_my_query_id());
  tmpl.logged_at = GetCurrentStatementStartTimestamp();
  strlcpy(tmpl.role, st->audit_role, NAMEDATALEN);
  strlcpy(tmpl.model_name, st->audit_model, NAMEDATALEN);

  Size limit = audit_max_record();
  Size per_row = static_cast<Size>(nfeat) * (sizeof(double) + 1) + sizeof(double) * width;
  List* records = NIL;
  for (int start = 0; start < nsel;) {
    Size bytes = audit_layout(0, nfeat, width, tmpl.names_len, 0).total + 8;
    Size text = 0;
    int end = start;
    while (end < nsel) {
      const RowValues& row = rows[sel[end]];
      Size t = 0;
      for (int f = 0; f < nfeat; ++f)
        if (is_text[f] && !row.isnull[f] && row.str[f]) t += strlen(row.str[f]) + 1;
      if (want == Want::Label) t += strlen(s.labels[sel[end]]) + 1;
      if (end > start && bytes + per_row + t > limit) break;
      bytes += per_row + t;
      text += t;
      end++;
    }
    int m = end - start;
    AuditLayout l = audit_layout(m, nfeat, width, tmpl.names_len, static_cast<int>(text));
    char* buf = static_cast<char*>(palloc0(l.total));
    auto* rec = reinterpret_cast<AuditRecord*>(buf);
    *rec = tmpl;
    rec->total_len = static_cast<uint32>(l.total);
    rec->nrows = m;
    rec->text_len = static_cast<int32>(text);
    auto* in = reinterpret_cast<double*>(buf + l.inputs);
    auto* ov = reinterpret_cast<double*>(buf + l.outputs);
    auto* nulls = reinterpret_cast<uint8*>(buf + l.input_null);
    memcpy(buf + l.feat_is_text, is_text, nfeat);
    memcpy(buf + l.names, st->audit_names, tmpl.names_len);
    char* tp = buf + l.text;
    for (int i = 0; i < m; ++i) {
      int r = sel[start + i];
      const RowValues& row = rows[r];
      for (int f = 0; f < nfeat; ++f) {
        Size c = static_cast<Size>(i) * nfeat + f;
        bool text_value = is_text[f] && !row.isnull[f] && row.str[f];
        nulls[c] = row.isnull[f] || (is_text[f] && !row.str[f]);
        in[c] = row.num[f];
        if (text_value) {
          Size len = strlen(row.str[f]) + 1;
          memcpy(tp, row.str[f], len);
          tp += len;
        }
      }
      if (want == Want::Value) ov[i] = s.values[r];
      else if (want != Want::Label) memcpy(ov + static_cast<Size>(i) * width, s.numbers + static_cast<Size>(r) * width,
                                           sizeof(double) * width);
    }
    if (want == Want::Label) {
      for (int i = 0; i < m; ++i) {
        Size len = strlen(s.labels[sel[start + i]]) + 1;
        memcpy(tp, s.labels[sel[start + i]], len);
        tp += len;
      }
    }
    records = lappend(records, buf);
    start = end;
  }
  pfree(sel);
  return records;
}

}  // namespace

void resolve_model(CallState* st, Datum model_arg) {
  if (st->model_is_value) resolve_by_value(st, model_arg);
  else resolve_by_name(st, model_arg);
  check_bindable(st);
}

RowValues extract_row(CallState* st, Datum input) {
  RowValues row = st->input_is_record ? extract_record(st, input) : extract_array(st, input);
  check_nulls(st, row);
  return row;
}

RowValues extract_columns(CallState* st, Oid rowtype, const Datum* values, const bool* nulls) {
  bind_record(st, st->mcxt, rowtype, -1);
  RowValues row = row_from_columns(st, values, nulls);
  check_nulls(st, row);
  return row;
}

namespace {

// The results of a scored batch as Datums, and its audit records (`rows` are its inputs).
void deliver(CallState* st, const RowValues* rows, int n, Want want, Scored& s, Datum* out) {
  // Audit records are built before the results are freed and enqueued after (enqueueing may wait
  // for room in the queue, or be cancelled).
  List* records = st->audit_mode != AuditMode::Off ? audit_records(st, rows, n, want, s) : NIL;
  for (int r = 0; r < n; ++r) out[r] = result_datum(s, r, want);
  free_scored(s);
  ListCell* lc;
  foreach (lc, records) {
    audit_enqueue(static_cast<const AuditRecord*>(lfirst(lc)));
    pfree(lfirst(lc));
  }
  list_free(records);
}

}  // namespace

void score_rows(CallState* st, const RowValues* rows, int n, Want want, Datum* out) {
  if (n == 0) return;
  Scored s = score(st, rows, n, want);
  deliver(st, rows, n, want, s, out);
}

// ------------------------------------------------------------------------------------------------
// Columnar scoring: a batch's features go from the rows' column values straight into the model's
// input tensors, which live as long as the scorer and are reused from batch to batch.

namespace {

// Where one bound feature comes from and goes to.
struct ColumnFeature {
  int src;         // index into the row's values
  Conv conv;
  bool null_ok;    // the model has missing-value handling for it (else a NULL is an error)
  bool to_double;  // the input is Double (else Float)
  int input;       // model input k
  int64_t width;   // values per row of input k
  int64_t col;     // position in input k's row
};

}  // namespace

struct ColumnScorer {
  CallState* st;
  int capacity;             // rows per batch at most
  int rows_alloc;           // rows the tensors (and audit arrays) have room for: grown on demand
  int nfeat;
  int width;                // leading columns of a row that are read
  ColumnFeature* feats;     // [nfeat]
  // The common case, taken by a plain loop: one float input fed by float4 columns, no audit.
  bool float4_row;
  int* srcs;                // [nfeat] feats[f].src
  int ninputs;
  float** fdst;             // [ninputs] input tensors' storage (Float inputs)
  double** ddst;            // [ninputs] (Double inputs)
  // The first NULL the model cannot take in this batch: raised when the batch is scored, so the
  // errors come in the same order as extract_columns() raises them.
  int null_row;
  int null_feat;
  // With audit capture on, the features as extract_columns() gives them, [rows_alloc][nfeat].
  bool audit;
  double* audit_num;
  bool* audit_null;
  char** no_text;           // [nfeat] NULLs: audit records read text only for string inputs
  flock::FeatureBatch batch;  // C++; destroyed when the memory context goes
};

namespace {

void destroy_column_scorer(void* arg) { static_cast<ColumnScorer*>(arg)->~ColumnScorer(); }

// Sets the batch to n rows. Shrinking keeps the first n rows' values and never reallocates.
void set_batch_rows(flock::FeatureBatch& batch, int n) {
  batch.rows = n;
  for (auto& t : batch.inputs) {
    t.shape[0] = n;
    size_t size = static_cast<size_t>(n) * static_cast<size_t>(t.shape[1]);
    if (t.type == flock::ElemType::Float) t.f.resize(size);
    else t.d.resize(size);
  }
}

}  // namespace

ColumnScorer* column_scorer(CallState* st, Oid rowtype, int offset, int capacity) {
  const flock::Signature& sig = st->model->signature();
  for (const auto& in : sig.inputs)
    if (in.type != flock::ElemType::Float && in.type != flock::ElemType::Double) return nullptr;
  if (!bind_record(st, st->mcxt, rowtype, -1, /*probe=*/true)) return nullptr;
  for (int f = 0; f < st->nfeatures; ++f) {
    switch (st->binds[f].conv) {
      case Conv::Float4: case Conv::Float8: case Conv::Int2: case Conv::Int4: case Conv::Int8: case Conv::Bool:
        break;
      default:
        return nullptr;  // numeric (a function call that can fail), text
    }
  }
  MemoryContext mcxt = st->mcxt;
  void* mem = MemoryContextAllocZero(mcxt, sizeof(ColumnScorer));
  auto* cs = new (mem) ColumnScorer();  // no allocation: empty vectors
  auto* cb = static_cast<MemoryContextCallback*>(MemoryContextAllocZero(mcxt, sizeof(MemoryContextCallback)));
  cb->func = destroy_column_scorer;
  cb->arg = cs;
  MemoryContextRegisterResetCallback(mcxt, cb);
  cs->st = st;
  cs->capacity = std::max(capacity, 1);
  cs->nfeat = st->nfeatures;
  cs->ninputs = static_cast<int>(sig.inputs.size());
  cs->feats = static_cast<ColumnFeature*>(MemoryContextAllocZero(mcxt, sizeof(ColumnFeature) * std::max(cs->nfeat, 1)));
  cs->fdst = static_cast<float**>(MemoryContextAllocZero(mcxt, sizeof(float*) * cs->ninputs));
  cs->ddst = static_cast<double**>(MemoryContextAllocZero(mcxt, sizeof(double*) * cs->ninputs));
  int f = 0;
  for (int k = 0; k < cs->ninputs; ++k) {
    const flock::InputSpec& in = sig.inputs[static_cast<size_t>(k)];
    for (int64_t j = 0; j < in.width; ++j, ++f) {
      ColumnFeature& ft = cs->feats[f];
      ft.src = offset + st->binds[f].attno;
      ft.conv = st->binds[f].conv;
      ft.null_ok = null_allowed(sig, static_cast<size_t>(k));
      ft.to_double = in.type == flock::ElemType::Double;
      ft.input = k;
      ft.width = in.width;
      ft.col = j;
      cs->width = std::max(cs->width, ft.src + 1);
    }
  }
  cs->audit = st->audit_mode != AuditMode::Off;
  cs->srcs = static_cast<int*>(MemoryContextAlloc(mcxt, sizeof(int) * std::max(cs->nfeat, 1)));
  cs->float4_row = !cs->audit && cs->ninputs == 1 && sig.inputs[0].type == flock::ElemType::Float;
  for (f = 0; f < cs->nfeat; ++f) {
    cs->srcs[f] = cs->feats[f].src;
    cs->float4_row = cs->float4_row && cs->feats[f].conv == Conv::Float4;
  }
  if (cs->audit)
    cs->no_text = static_cast<char**>(MemoryContextAllocZero(mcxt, sizeof(char*) * std::max(cs->nfeat, 1)));
  cs->null_row = -1;
  const flock::Model* model = st->model;
  flock_guard([&] {
    for (const auto& in : model->signature().inputs)
      cs->batch.inputs.emplace_back(in.type, std::vector<int64_t>{0, in.width});
  });
  return cs;
}

int column_scorer_width(const ColumnScorer* cs) { return cs->width; }

namespace {

// The input tensors' storage, after it moved.
void point_at_tensors(ColumnScorer* cs) {
  for (int k = 0; k < cs->ninputs; ++k) {
    flock::Tensor& t = cs->batch.inputs[static_cast<size_t>(k)];
    cs->fdst[k] = t.type == flock::ElemType::Float ? t.f.data() : nullptr;
    cs->ddst[k] = t.type == flock::ElemType::Double ? t.d.data() : nullptr;
  }
}

// Room for at least `rows` rows: storage grows as rows come, so a large batch size costs nothing
// on a small table.
void grow(ColumnScorer* cs, int rows) {
  Assert(rows <= cs->capacity);
  int to = std::min(cs->capacity, std::max(rows, std::max(2 * cs->rows_alloc, 64)));
  flock_guard([&] { set_batch_rows(cs->batch, to); });
  point_at_tensors(cs);
  if (cs->audit) {
    Size cells = static_cast<Size>(to) * std::max(cs->nfeat, 1);
    MemoryContext mcxt = cs->st->mcxt;
    cs->audit_num = static_cast<double*>(cs->audit_num ? repalloc_huge(cs->audit_num, sizeof(double) * cells)
                                                       : MemoryContextAllocHuge(mcxt, sizeof(double) * cells));
    cs->audit_null = static_cast<bool*>(cs->audit_null ? repalloc_huge(cs->audit_null, sizeof(bool) * cells)
                                                       : MemoryContextAllocHuge(mcxt, sizeof(bool) * cells));
  }
  cs->rows_alloc = to;
}

}  // namespace

void column_scorer_start(ColumnScorer* cs) {
  cs->null_row = -1;
  point_at_tensors(cs);
}

void column_scorer_add(ColumnScorer* cs, int r, const Datum* values, const bool* isnull) {
  if (r >= cs->rows_alloc) grow(cs, r + 1);
  if (cs->float4_row) {
    float* dst = cs->fdst[0] + static_cast<size_t>(r) * cs->nfeat;
    for (int f = 0; f < cs->nfeat; ++f) {
      int a = cs->srcs[f];
      if (likely(!isnull[a])) {
        dst[f] = DatumGetFloat4(values[a]);
        continue;
      }
      dst[f] = NAN;
      if (!cs->feats[f].null_ok && cs->null_row < 0) {
        cs->null_row = r;
        cs->null_feat = f;
      }
    }
    return;
  }
  double* audit_num = cs->audit ? cs->audit_num + static_cast<Size>(r) * cs->nfeat : nullptr;
  bool* audit_null = cs->audit ? cs->audit_null + static_cast<Size>(r) * cs->nfeat : nullptr;
  for (int f = 0; f < cs->nfeat; ++f) {
    const ColumnFeature& ft = cs->feats[f];
    bool null = isnull[ft.src];
    // The same value extract_columns() gives, and the same conversion to the input's type.
    double v = null ? NAN : numeric_value(values[ft.src], ft.conv);
    if (null && !ft.null_ok && cs->null_row < 0) {
      cs->null_row = r;
      cs->null_feat = f;
    }
    size_t dst = static_cast<size_t>(r * ft.width + ft.col);
    if (ft.to_double) cs->ddst[ft.input][dst] = v;
    else cs->fdst[ft.input][dst] = static_cast<float>(v);
    if (audit_num) {
      audit_num[f] = v;
      audit_null[f] = null;
    }
  }
}

void column_scorer_score(ColumnScorer* cs, int n, Want want, Datum* out) {
  CallState* st = cs->st;
  Assert(cs->audit == (st->audit_mode != AuditMode::Off));  // the policy is read once per query
  if (cs->null_row >= 0) {
    const ColumnFeature& ft = cs->feats[cs->null_feat];
    null_feature_error(st, cs->null_feat, static_cast<size_t>(ft.input), ft.col);
  }
  if (n == 0) return;
  Scored s = {n, nullptr, nullptr, nullptr, 0, 0, {}};
  const flock::Model* model = st->model;
  const char* label = st->label;
  flock_guard([&] {
    if (n != cs->batch.rows) {  // a short batch: keeps the storage
      set_batch_rows(cs->batch, n);
      cs->rows_alloc = n;
    }
    run_batch(model, label, cs->batch, want, s);
  });
  RowValues* rows = nullptr;
  if (cs->audit) {
    rows = static_cast<RowValues*>(palloc(sizeof(RowValues) * n));
    for (int r = 0; r < n; ++r)
      rows[r] = {cs->nfeat, cs->audit_num + static_cast<Size>(r) * cs->nfeat, cs->no_text,
                 cs->audit_null + static_cast<Size>(r) * cs->nfeat};
  }
  deliver(st, rows, n, want, s, out);
}

const char* model_label(const CallState* st) { return st->label; }

Size call_bytes_per_row(const CallState* st) {
  Size features = 0;
  for (const auto& in : st->model->signature().inputs) features += static_cast<Size>(std::max<int64_t>(in.width, 1));
  // RowValues per feature: a double, a string pointer and a null flag.
  return st->model->bytes_per_row() + features * (sizeof(double) + sizeof(char*) + sizeof(bool)) + sizeof(RowValues);
}

}  // namespace flock::pg

using namespace flock::pg;

Datum flock_predict(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Value); }
Datum flock_predict_proba(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Proba); }
Datum flock_predict_label(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Label); }
Datum flock_predict_tensor(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Tensor); }
