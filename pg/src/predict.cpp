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

#include "cache.hpp"
#include "guard.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(flock_predict);
PG_FUNCTION_INFO_V1(flock_predict_proba);
PG_FUNCTION_INFO_V1(flock_predict_label);
PG_FUNCTION_INFO_V1(flock_predict_tensor);
}

using namespace flock::pg;

namespace {

enum class Want { Value, Proba, Label, Tensor };

// How one model feature is read from the record.
enum class Conv : uint8 { Float4, Float8, Int2, Int4, Int8, Numeric, Bool, Text, ViaOutput, Unsupported };

struct FeatureBinding {
  int attno;   // 0-based column of the record
  Conv conv;
  Oid typoutput;  // for ViaOutput
};

// Everything a call site caches across rows. Palloc'd in fn_mcxt; POD but for the handle.
struct CallState {
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
};

CallState* call_state(FunctionCallInfo fcinfo) {
  auto* st = static_cast<CallState*>(fcinfo->flinfo->fn_extra);
  if (st) return st;
  st = static_cast<CallState*>(MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(CallState)));
  Oid arg0 = get_fn_expr_argtype(fcinfo->flinfo, 0);
  Oid arg1 = get_fn_expr_argtype(fcinfo->flinfo, 1);
  st->model_is_value = arg0 != TEXTOID && arg0 != InvalidOid && arg0 != UNKNOWNOID;
  st->input_is_record = arg1 != FLOAT4ARRAYOID;
  if (arg1 == InvalidOid) st->input_is_record = true;
  fcinfo->flinfo->fn_extra = st;
  return st;
}

void set_model(CallState* st, MemoryContext mcxt, const std::shared_ptr<const flock::Model>& m);

// Resolves a name reference through flock._resolve() (which raises the not-found errors).
void resolve_by_name(FunctionCallInfo fcinfo, CallState* st) {
  char* ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
  if (st->model && st->generation == catalog_generation && st->ref && strcmp(st->ref, ref) == 0) return;

  MemoryContext fn_mcxt = fcinfo->flinfo->fn_mcxt;
  uint64 generation = catalog_generation;
  cache_stats.resolutions++;
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid argtypes[1] = {TEXTOID};
  Datum args[1] = {CStringGetTextDatum(ref)};
  int rc = SPI_execute_with_args("SELECT name, version, sha256, model FROM flock._resolve($1)", 1, argtypes,
                                 args, nullptr, true, 1);
  if (rc != SPI_OK_SELECT || SPI_processed != 1) elog(ERROR, "could not resolve model \"%s\"", ref);
  HeapTuple row = SPI_tuptable->vals[0];
  TupleDesc desc = SPI_tuptable->tupdesc;
  char* name = SPI_getvalue(row, desc, 1);
  char* version = SPI_getvalue(row, desc, 2);
  char* sha = SPI_getvalue(row, desc, 3);

  ModelHandle* handle = new_model_handle(CurrentMemoryContext);  // SPI context: freed at SPI_finish
  flock_guard([&] { handle->model = find_cached_model(sha); });
  if (!handle->model) {
    bool isnull;
    Datum d = SPI_getbinval(row, desc, 4, &isnull);
    bytea* bytes = DatumGetByteaPP(d);  // detoasts
    flock_guard([&] {
      handle->model = cached_model(sha, {reinterpret_cast<const uint8_t*>(VARDATA_ANY(bytes)), VARSIZE_ANY_EXHDR(bytes)});
    });
  }
  set_model(st, fn_mcxt, handle->model);
  st->ref = MemoryContextStrdup(fn_mcxt, ref);
  st->label = MemoryContextStrdup(fn_mcxt, psprintf("%s@%s", name, version));
  st->generation = generation;
  if (models_relid == InvalidOid) {
    Oid ns = get_namespace_oid("flock", true);
    if (OidIsValid(ns)) models_relid = get_relname_relid("models", ns);
  }
  SPI_finish();
}

// Resolves a flock.model value, recognising the same value again cheaply (TOAST identity, or bytes).
void resolve_by_value(FunctionCallInfo fcinfo, CallState* st) {
  struct varlena* raw = reinterpret_cast<struct varlena*>(DatumGetPointer(PG_GETARG_DATUM(0)));
  bool ondisk = VARATT_IS_EXTERNAL_ONDISK(raw);
  struct varatt_external ptr = {};
  if (ondisk) {
    VARATT_EXTERNAL_GET_POINTER(ptr, raw);
    if (st->model && st->toast_relid == ptr.va_toastrelid && st->toast_valueid == ptr.va_valueid) return;
  }
  bytea* bytes = DatumGetByteaPP(PG_GETARG_DATUM(0));
  size_t len = VARSIZE_ANY_EXHDR(bytes);
  if (!ondisk && st->model && st->inline_value && VARSIZE_ANY_EXHDR(st->inline_value) == len &&
      memcmp(VARDATA_ANY(st->inline_value), VARDATA_ANY(bytes), len) == 0)
    return;

  MemoryContext fn_mcxt = fcinfo->flinfo->fn_mcxt;
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
// by column order. Errors name the missing column or the mismatched type.
void bind_record(CallState* st, MemoryContext mcxt, Oid rec_type, int32 rec_typmod) {
  if (st->binds && st->bound_model == st->model && st->rec_type == rec_type && st->rec_typmod == rec_typmod) return;
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
  if (!by_name && live != total)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s takes %d features, the record has %d columns", st->label, total, live),
                    errdetail("The model carries no feature names, so the record's columns bind in their order."),
                    errhint("Pass exactly the model's features, in order, e.g. flock.predict(m, (a, b, c)), or "
                            "register the model with features => ARRAY[...].")));

  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    const flock::InputSpec& in = sig.inputs[k];
    if (!single && in.width != 1)
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                      errmsg("%s input \"%s\" takes %ld values per row; a record column gives one", st->label,
                             in.name.c_str(), static_cast<long>(in.width))));
    for (int64_t j = 0; j < in.width; ++j, ++f) {
      int attno;
      const char* fname = nullptr;
      if (by_name) {
        fname = single ? sig.feature_names[j].c_str() : in.name.c_str();
        attno = find_column(desc, fname);
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
}

// One row's feature values, extracted in plain PostgreSQL code.
struct RowValues {
  int n;
  double* num;      // numeric features (NaN for NULL)
  char** str;       // string features (nullptr for NULL)
  bool* isnull;
};

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

RowValues extract_record(FunctionCallInfo fcinfo, CallState* st) {
  HeapTupleHeader th = PG_GETARG_HEAPTUPLEHEADER(1);
  bind_record(st, fcinfo->flinfo->fn_mcxt, HeapTupleHeaderGetTypeId(th), HeapTupleHeaderGetTypMod(th));
  TupleDesc desc = st->rec_desc;
  HeapTupleData tuple;
  tuple.t_len = HeapTupleHeaderGetDatumLength(th);
  ItemPointerSetInvalid(&tuple.t_self);
  tuple.t_tableOid = InvalidOid;
  tuple.t_data = th;
  Datum* values = static_cast<Datum*>(palloc(sizeof(Datum) * desc->natts));
  bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * desc->natts));
  heap_deform_tuple(&tuple, desc, values, nulls);

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

RowValues extract_array(FunctionCallInfo fcinfo, CallState* st) {
  const flock::Signature& sig = st->model->signature();
  if (sig.inputs.size() != 1 || sig.inputs[0].type == flock::ElemType::String)
    ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                    errmsg("%s takes named inputs (%s), not a feature array", st->label, feature_list(sig)),
                    errhint("Pass a record whose columns carry those names, e.g. flock.predict('%s', t) FROM t.",
                            st->ref ? st->ref : "model")));
  ArrayType* arr = PG_GETARG_ARRAYTYPE_P(1);
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

// NULL features are allowed only where the model has missing-value semantics (trees, imputers).
void check_nulls(CallState* st, const RowValues& row) {
  const flock::Signature& sig = st->model->signature();
  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    for (int64_t j = 0; j < sig.inputs[k].width; ++j, ++f) {
      if (!row.isnull[f]) continue;
      bool ok = sig.inputs[k].type != flock::ElemType::String && sig.inputs[k].type != flock::ElemType::Int64 &&
                sig.input_accepts_missing[k];
      if (ok) continue;
      const char* fname = sig.inputs.size() == 1
                              ? (sig.feature_names.empty() ? psprintf("%d", f + 1) : sig.feature_names[j].c_str())
                              : sig.inputs[k].name.c_str();
      ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                      errmsg("feature \"%s\" is NULL and %s has no missing-value handling for it", fname, st->label),
                      errhint("Filter or COALESCE the NULLs in the query, or use a model that handles missing values "
                              "(tree ensembles, or a pipeline with an imputer).")));
    }
  }
}

struct Scored {
  double value;
  bool has_value;
  char* label;      // malloc'd
  double* proba;    // malloc'd: class probabilities, or the raw output tensor
  int n_classes;    // number of values in proba
  int ndims;        // Tensor: the output's dimensions past the batch
  int dims[MAXDIM];
};

Scored score(CallState* st, const RowValues& row, Want want) {
  Scored out = {0, false, nullptr, nullptr, 0, 0, {}};
  const flock::Model* model = st->model;
  const char* label = st->label;
  flock_guard([&] {
    const flock::Signature& sig = model->signature();
    flock::FeatureBatch batch;
    batch.rows = 1;
    int f = 0;
    for (const auto& in : sig.inputs) {
      flock::Tensor t(in.type, {1, in.width});
      for (int64_t j = 0; j < in.width; ++j, ++f) {
        switch (in.type) {
          case flock::ElemType::Float: t.f[j] = static_cast<float>(row.num[f]); break;
          case flock::ElemType::Double: t.d[j] = row.num[f]; break;
          case flock::ElemType::Int64:
            if (row.num[f] != std::nearbyint(row.num[f]))
              flock::fail(flock::ErrorCode::InvalidInput,
                          fmt::format("{} input '{}' takes whole numbers, got {}", label, in.name, row.num[f]));
            t.i[j] = static_cast<int64_t>(row.num[f]);
            break;
          case flock::ElemType::String: t.s[j] = row.str[f] ? row.str[f] : ""; break;
          case flock::ElemType::Bool: t.b[j] = row.num[f] != 0; break;
        }
      }
      batch.inputs.push_back(std::move(t));
    }
    if (want == Want::Tensor) {
      std::vector<flock::Tensor> outputs = model->run(batch);
      // The first numeric float output; else the first output that has numbers.
      const flock::Tensor* chosen = nullptr;
      for (const auto& t : outputs)
        if (!chosen && (t.type == flock::ElemType::Float || t.type == flock::ElemType::Double)) chosen = &t;
      for (const auto& t : outputs)
        if (!chosen && t.type != flock::ElemType::String) chosen = &t;
      if (!chosen)
        flock::fail(flock::ErrorCode::TypeMismatch, fmt::format("{} has no numeric output", label),
                    "Use flock.predict_label for text outputs.");
      size_t n = chosen->size();
      int rank = static_cast<int>(chosen->shape.size());
      if (rank - 1 > MAXDIM) flock::fail(flock::ErrorCode::LimitExceeded, "output tensor has too many dimensions");
      out.ndims = rank <= 1 ? 1 : rank - 1;
      if (rank <= 1) out.dims[0] = static_cast<int>(n);
      else
        for (int d = 1; d < rank; ++d) out.dims[d - 1] = static_cast<int>(chosen->shape[d]);
      out.n_classes = static_cast<int>(n);
      out.proba = static_cast<double*>(std::malloc(sizeof(double) * std::max<size_t>(n, 1)));
      if (!out.proba) throw std::bad_alloc();
      for (size_t k = 0; k < n; ++k) out.proba[k] = chosen->as_double(k);
      return;
    }
    flock::Prediction p = model->predict(batch);
    if (want == Want::Value) {
      if (sig.task == flock::Task::Classification && !sig.numeric_labels)
        flock::fail(flock::ErrorCode::TypeMismatch,
                    fmt::format("{} has text class labels; flock.predict returns a number", label),
                    "Use flock.predict_label for the label, or flock.predict_proba for class probabilities.");
      out.value = p.values.at(0);
      out.has_value = true;
    } else if (want == Want::Label) {
      if (sig.task != flock::Task::Classification)
        flock::fail(flock::ErrorCode::TypeMismatch, fmt::format("{} is a regressor; it has no class label", label),
                    "Use flock.predict for its value.");
      out.label = strdup(p.labels.at(0).c_str());
      if (!out.label) throw std::bad_alloc();
    } else {
      if (sig.task != flock::Task::Classification || p.n_classes == 0)
        flock::fail(flock::ErrorCode::TypeMismatch,
                    fmt::format("{} is a regressor; it has no class probabilities", label),
                    "Use flock.predict for its value.");
      out.n_classes = static_cast<int>(p.n_classes);
      out.proba = static_cast<double*>(std::malloc(sizeof(double) * p.n_classes));
      if (!out.proba) throw std::bad_alloc();
      std::memcpy(out.proba, p.proba.data(), sizeof(double) * p.n_classes);
    }
  });
  return out;
}

Datum predict_entry(FunctionCallInfo fcinfo, Want want) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  if (PG_ARGISNULL(1)) PG_RETURN_NULL();  // no row, no prediction
  CallState* st = call_state(fcinfo);
  if (st->model_is_value) resolve_by_value(fcinfo, st);
  else resolve_by_name(fcinfo, st);

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
  RowValues row = st->input_is_record ? extract_record(fcinfo, st) : extract_array(fcinfo, st);
  check_nulls(st, row);
  Scored s = score(st, row, want);
  switch (want) {
    case Want::Value: PG_RETURN_FLOAT8(s.value);
    case Want::Label: {
      text* t = cstring_to_text(s.label);
      free(s.label);
      PG_RETURN_TEXT_P(t);
    }
    case Want::Tensor: {
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * std::max(s.n_classes, 1)));
      for (int k = 0; k < s.n_classes; ++k) elems[k] = Float4GetDatum(static_cast<float4>(s.proba[k]));
      free(s.proba);
      int lbs[MAXDIM];
      for (int d = 0; d < s.ndims; ++d) lbs[d] = 1;
      if (s.n_classes == 0) PG_RETURN_ARRAYTYPE_P(construct_empty_array(FLOAT4OID));
      PG_RETURN_ARRAYTYPE_P(construct_md_array(elems, nullptr, s.ndims, s.dims, lbs, FLOAT4OID, sizeof(float4),
                                               true, TYPALIGN_INT));
    }
    case Want::Proba: {
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * std::max(s.n_classes, 1)));
      for (int k = 0; k < s.n_classes; ++k) elems[k] = Float8GetDatum(s.proba[k]);
      free(s.proba);
      PG_RETURN_ARRAYTYPE_P(construct_array(elems, s.n_classes, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    }
  }
  PG_RETURN_NULL();
}

}  // namespace

Datum flock_predict(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Value); }
Datum flock_predict_proba(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Proba); }
Datum flock_predict_label(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Label); }
Datum flock_predict_tensor(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Tensor); }
