// Personal-data marks applied to one inference log batch (pg/sql/50_privacy.sql's log trigger).
//
// flock._privacy_mask_batch(actions, widths, inner_key, outer_key, input, input_real, input_text)
// returns the three input arrays (n_rows x features, the log's layout) with each feature's mark
// applied: keep, redact (NULL), generalize (floor(value / width) * width) or hash (HMAC-SHA-256
// in hex, moved to input_text; NULL in the numeric arrays). It computes exactly what the SQL
// definitions do (flock._privacy_hmac over flock._privacy_number_text, extra_float_digits pinned
// by the caller) in one pass, where SQL needed an aggregate per row of the batch.
//
// Plain C style: these frames hold no C++ objects, so PostgreSQL errors may unwind them.
#include "pg.hpp"  // must come first

extern "C" {
#include "utils/float.h"
}

#include <cmath>

extern "C" {
PG_FUNCTION_INFO_V1(flock_privacy_mask_batch);
}

namespace {

enum Action { kKeep, kRedact, kGeneralize, kHash };

constexpr double kLargestExactInteger = 1e15;  // integral values below this print as integers

Action parse_action(Datum text_datum) {
  char* name = TextDatumGetCString(text_datum);
  if (strcmp(name, "keep") == 0) return kKeep;
  if (strcmp(name, "redact") == 0) return kRedact;
  if (strcmp(name, "generalize") == 0) return kGeneralize;
  if (strcmp(name, "hash") == 0) return kHash;
  ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("unknown privacy action \"%s\"", name)));
  return kKeep;
}

// The text a number is hashed as: an integral value as an integer, else the type's own output.
char* number_text(double value, bool is_real) {
  if (std::isfinite(value) && value == std::trunc(value) && std::fabs(value) < kLargestExactInteger)
    return psprintf("%lld", static_cast<long long>(value));
  if (is_real) return DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(static_cast<float4>(value))));
  return float8out_internal(value);
}

// sha256(outer_key || sha256(inner_key || message)), hex: RFC 2104 with the stored padded keys.
Datum hmac_hex(pg_cryptohash_ctx* ctx, const bytea* inner_key, const bytea* outer_key, const char* message) {
  uint8 inner[PG_SHA256_DIGEST_LENGTH];
  uint8 outer[PG_SHA256_DIGEST_LENGTH];
  if (pg_cryptohash_init(ctx) < 0 ||
      pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(VARDATA_ANY(inner_key)), VARSIZE_ANY_EXHDR(inner_key)) < 0 ||
      pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(message), strlen(message)) < 0 ||
      pg_cryptohash_final(ctx, inner, sizeof(inner)) < 0 || pg_cryptohash_init(ctx) < 0 ||
      pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(VARDATA_ANY(outer_key)), VARSIZE_ANY_EXHDR(outer_key)) < 0 ||
      pg_cryptohash_update(ctx, inner, sizeof(inner)) < 0 || pg_cryptohash_final(ctx, outer, sizeof(outer)) < 0)
    elog(ERROR, "could not compute HMAC-SHA-256");
  static const char kHex[] = "0123456789abcdef";
  char hex[2 * PG_SHA256_DIGEST_LENGTH + 1];
  for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; ++i) {
    hex[2 * i] = kHex[outer[i] >> 4];
    hex[2 * i + 1] = kHex[outer[i] & 0xf];
  }
  hex[2 * PG_SHA256_DIGEST_LENGTH] = '\0';
  return CStringGetTextDatum(hex);
}

struct Batch {
  ArrayType* array;  // nullptr: absent
  Datum* values;
  bool* nulls;
  int count;
};

Batch deconstruct(FunctionCallInfo fcinfo, int arg, Oid element_type) {
  Batch b = {nullptr, nullptr, nullptr, 0};
  if (PG_ARGISNULL(arg)) return b;
  b.array = PG_GETARG_ARRAYTYPE_P(arg);
  int16 len;
  bool byval;
  char align;
  get_typlenbyvalalign(element_type, &len, &byval, &align);
  deconstruct_array(b.array, element_type, len, byval, align, &b.values, &b.nulls, &b.count);
  return b;
}

Datum construct_like(const ArrayType* shape, Datum* values, bool* nulls, Oid element_type) {
  int16 len;
  bool byval;
  char align;
  get_typlenbyvalalign(element_type, &len, &byval, &align);
  return PointerGetDatum(construct_md_array(values, nulls, ARR_NDIM(shape), ARR_DIMS(shape), ARR_LBOUND(shape),
                                            element_type, len, byval, align));
}

}  // namespace

extern "C" Datum flock_privacy_mask_batch(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) elog(ERROR, "flock._privacy_mask_batch needs actions and widths");
  TupleDesc result_desc;
  if (get_call_result_type(fcinfo, nullptr, &result_desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "flock._privacy_mask_batch must return a record");
  result_desc = BlessTupleDesc(result_desc);

  Batch action_names = deconstruct(fcinfo, 0, TEXTOID);
  Batch widths = deconstruct(fcinfo, 1, FLOAT8OID);
  int features = action_names.count;
  if (features == 0 || widths.count != features) elog(ERROR, "flock._privacy_mask_batch: actions and widths differ");
  Action* actions = static_cast<Action*>(palloc(sizeof(Action) * features));
  bool any_hash = false;
  for (int f = 0; f < features; ++f) {
    actions[f] = action_names.nulls[f] ? kKeep : parse_action(action_names.values[f]);
    if (actions[f] == kGeneralize && (widths.nulls[f] || !(DatumGetFloat8(widths.values[f]) > 0)))
      elog(ERROR, "flock._privacy_mask_batch: generalize needs a positive width");
    any_hash = any_hash || actions[f] == kHash;
  }
  const bytea* inner_key = PG_ARGISNULL(2) ? nullptr : PG_GETARG_BYTEA_PP(2);
  const bytea* outer_key = PG_ARGISNULL(3) ? nullptr : PG_GETARG_BYTEA_PP(3);
  if (any_hash && (inner_key == nullptr || outer_key == nullptr))
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("the privacy key is missing"),
                    errhint("flock.classify_column makes it; restore flock._privacy_key from a dump.")));

  Batch input = deconstruct(fcinfo, 4, FLOAT8OID);
  Batch input_real = deconstruct(fcinfo, 5, FLOAT4OID);
  Batch input_text = deconstruct(fcinfo, 6, TEXTOID);
  const ArrayType* shape = input_text.array ? input_text.array : input_real.array ? input_real.array : input.array;
  int count = input_text.array ? input_text.count : input_real.array ? input_real.count : input.count;
  if ((input.array && input.count != count) || (input_real.array && input_real.count != count) || count % features != 0)
    elog(ERROR, "flock._privacy_mask_batch: the input arrays do not have features x rows values");

  pg_cryptohash_ctx* ctx = any_hash ? pg_cryptohash_create(PG_SHA256) : nullptr;
  Datum* text_values = static_cast<Datum*>(palloc0(sizeof(Datum) * Max(count, 1)));
  bool* text_nulls = static_cast<bool*>(palloc(sizeof(bool) * Max(count, 1)));
  for (int i = 0; i < count; ++i) {
    int f = i % features;
    Action action = actions[f];
    double width = action == kGeneralize ? DatumGetFloat8(widths.values[f]) : 0;
    bool has_text = input_text.array && !input_text.nulls[i];
    text_nulls[i] = true;
    if (action == kKeep && has_text) {
      text_values[i] = input_text.values[i];
      text_nulls[i] = false;
    } else if (action == kHash) {
      char* message = nullptr;
      if (has_text)
        message = TextDatumGetCString(input_text.values[i]);
      else if (input_real.array && !input_real.nulls[i])
        message = number_text(DatumGetFloat4(input_real.values[i]), true);
      else if (input.array && !input.nulls[i])
        message = number_text(DatumGetFloat8(input.values[i]), false);
      if (message != nullptr) {
        text_values[i] = hmac_hex(ctx, inner_key, outer_key, message);
        text_nulls[i] = false;
      }
    }
    if (input.array && !input.nulls[i] && action != kKeep) {
      if (action == kGeneralize)
        input.values[i] = Float8GetDatum(std::floor(DatumGetFloat8(input.values[i]) / width) * width);
      else
        input.nulls[i] = true;
    }
    if (input_real.array && !input_real.nulls[i] && action != kKeep) {
      if (action == kGeneralize)
        input_real.values[i] = Float4GetDatum(static_cast<float4>(std::floor(DatumGetFloat4(input_real.values[i]) / width) * width));
      else
        input_real.nulls[i] = true;
    }
    if ((i & 8191) == 0) CHECK_FOR_INTERRUPTS();
  }
  if (ctx != nullptr) pg_cryptohash_free(ctx);

  Datum result[3] = {0, 0, 0};
  bool result_nulls[3] = {input.array == nullptr, input_real.array == nullptr,
                          input_text.array == nullptr && !any_hash};
  if (input.array) result[0] = construct_like(input.array, input.values, input.nulls, FLOAT8OID);
  if (input_real.array) result[1] = construct_like(input_real.array, input_real.values, input_real.nulls, FLOAT4OID);
  if (!result_nulls[2]) {
    if (shape == nullptr) {
      result_nulls[2] = true;
    } else {
      result[2] = construct_like(shape, text_values, text_nulls, TEXTOID);
    }
  }
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_desc, result, result_nulls)));
}
