// Binding a call's input to the model's features: a record by column name (or by position when the
// model has no feature names), a float4[] by position; one row's values extracted as RowValues.
// Plain PostgreSQL code: the Datums are translated here, the model is not run.
#include "pg.hpp"  // must come first

#include <cstring>
#include <new>

#include "call_state.hpp"
#include "guard.hpp"

#include "flock/binding.hpp"

namespace flock::pg {

namespace {

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
  constexpr size_t kListedFeatures = 40;  // the rest are "..."
  StringInfoData buf;
  initStringInfo(&buf);
  for (size_t k = 0; k < sig.feature_names.size() && k < kListedFeatures; ++k)
    appendStringInfo(&buf, "%s%s", k ? ", " : "", sig.feature_names[k].c_str());
  if (sig.feature_names.size() > kListedFeatures) appendStringInfoString(&buf, ", ...");
  return buf.data;
}

}  // namespace

bool bind_record(CallState* st, MemoryContext mcxt, Oid rec_type, int32 rec_typmod, bool probe) {
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

  // Which column feeds which feature is the core's decision (flock/binding.hpp); it is made under
  // the guard and copied out, so that the errors below are raised with no C++ object alive.
  auto* columns = static_cast<flock::RecordColumn*>(palloc0(sizeof(flock::RecordColumn) * std::max(desc->natts, 1)));
  for (int a = 0; a < desc->natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    new (&columns[a]) flock::RecordColumn{NameStr(att->attname), static_cast<bool>(att->attisdropped)};
  }
  auto* matched = static_cast<flock::FeatureColumn*>(palloc0(sizeof(flock::FeatureColumn) * std::max(total, 1)));
  int nmatched = 0, live = 0, multi_value_input = -1;
  bool by_name = false, width_mismatch = false;
  const flock::Signature* sigp = &sig;
  flock_guard([&] {
    flock::RecordBinding b = flock::bind_record_columns(*sigp, {columns, static_cast<size_t>(desc->natts)});
    by_name = b.by_name;
    live = b.live_columns;
    width_mismatch = b.width_mismatch;
    multi_value_input = b.multi_value_input;
    nmatched = static_cast<int>(std::min<size_t>(b.features.size(), static_cast<size_t>(total)));
    for (int i = 0; i < nmatched; ++i) matched[i] = b.features[static_cast<size_t>(i)];
  });

  if (width_mismatch) {
    if (probe) return false;
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("%s takes %d features, the record has %d columns", st->label, total, live),
                    errdetail("The model carries no feature names, so the record's columns bind in their order."),
                    errhint("Pass exactly the model's features, in order, e.g. flock.predict(m, (a, b, c)), or "
                            "register the model with features => ARRAY[...].")));
  }

  for (int f = 0; f < nmatched; ++f) {
    const flock::FeatureColumn& fc = matched[f];
    const flock::InputSpec& in = sig.inputs[fc.input];
    int attno = fc.column;
    if (by_name && attno < 0) {
      if (probe) return false;
      const char* fname = single ? sig.feature_names[static_cast<size_t>(fc.position)].c_str() : in.name.c_str();
      ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                      errmsg("column \"%s\" is missing from the input record", fname),
                      errdetail("%s binds its features by name: %s.", st->label, feature_list(sig)),
                      errhint("Select the column under that name (expression AS \"%s\"), or pass the "
                              "features as a float4[] in model order.", fname)));
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
  if (multi_value_input >= 0) {
    if (probe) return false;
    const flock::InputSpec& in = sig.inputs[static_cast<size_t>(multi_value_input)];
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("%s input \"%s\" takes %ld values per row; a record column gives one", st->label,
                           in.name.c_str(), static_cast<long>(in.width))));
  }
  pfree(columns);
  pfree(matched);
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

namespace {

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

}  // namespace

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

namespace {

void check_nulls(CallState* st, const RowValues& row) {
  const flock::Signature& sig = st->model->signature();
  int f = 0;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    for (int64_t j = 0; j < sig.inputs[k].width; ++j, ++f) {
      if (row.isnull[f] && !null_allowed(sig, k)) null_feature_error(st, f, k, j);
    }
  }
}

}  // namespace

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

}  // namespace flock::pg
