// The flock.model type: I/O functions (text form = bytea hex form), validation, and the helpers
// register_model uses (format, sha256, signature, feature-name embedding).
#include "pg.hpp"  // must come first

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cache.hpp"
#include "guard.hpp"
#include "model_check.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(flock_model_in);
PG_FUNCTION_INFO_V1(flock_model_out);
PG_FUNCTION_INFO_V1(flock_model_recv);
PG_FUNCTION_INFO_V1(flock_model_send);
PG_FUNCTION_INFO_V1(flock_model_from_bytea);
PG_FUNCTION_INFO_V1(flock_model_format);
PG_FUNCTION_INFO_V1(flock_model_sha256);
PG_FUNCTION_INFO_V1(flock_model_signature);
PG_FUNCTION_INFO_V1(flock_prepare_model);
}

using namespace flock::pg;

namespace {

std::span<const uint8_t> bytes_of(bytea* b) {
  return {reinterpret_cast<const uint8_t*>(VARDATA_ANY(b)), VARSIZE_ANY_EXHDR(b)};
}

// Validates untrusted bytes and returns the same bytea as a model. The bytes are loaded first in
// flock-model-check (a separate, rlimited process, see model_check.cpp) and only then compiled
// here, through the cache: the backend compiles nothing that has not passed the isolated check.
// Bytes already compiled in this backend (a cache hit: same sha256 and tensor limit) are known to
// load, so they skip the checker.
//
// Invariant: every flock.model value was validated this way when it was made. The type's input
// and receive functions and the bytea cast are the only ways to make one (COPY, binary COPY,
// record_in/record_recv, array_in/array_recv, domains and I/O-conversion casts all call them;
// flock.model -> bytea is binary-coercible, never the other way round), and flock._prepare_model
// checks the same way (so does logical replication's apply, through the same functions). So a
// model read back from a table or the catalog is compiled in the backend without another check.
// Another session's flock.max_tensor_elements does not change that: a lower limit fails cleanly,
// a higher one runs exactly what the checker ran.
bytea* validated(bytea* b) {
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(b)), VARSIZE_ANY_EXHDR(b), sha);
  bool known = false;
  flock_guard([&] { known = find_cached_model(sha) != nullptr; });
  if (known) return b;
  check_model_isolated(b, "auto", -1, nullptr);
  flock_guard([&] { cached_model(sha, bytes_of(b)); });
  return b;
}

// The compiled model for a model value, via the cache.
const flock::Model* compiled(bytea* b, flock::pg::ModelHandle* keep) {
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(b)), VARSIZE_ANY_EXHDR(b), sha);
  flock_guard([&] { keep->model = cached_model(sha, bytes_of(b)); });
  return keep->model.get();
}

}  // namespace

Datum flock_model_in(PG_FUNCTION_ARGS) {
  Datum b = DirectFunctionCall1(byteain, PG_GETARG_DATUM(0));
  PG_RETURN_BYTEA_P(validated(DatumGetByteaPP(b)));
}

Datum flock_model_out(PG_FUNCTION_ARGS) { return byteaout(fcinfo); }

Datum flock_model_recv(PG_FUNCTION_ARGS) {
  Datum b = bytearecv(fcinfo);
  PG_RETURN_BYTEA_P(validated(DatumGetByteaPP(b)));
}

Datum flock_model_send(PG_FUNCTION_ARGS) { return byteasend(fcinfo); }

Datum flock_model_from_bytea(PG_FUNCTION_ARGS) { PG_RETURN_BYTEA_P(validated(PG_GETARG_BYTEA_PP(0))); }

Datum flock_model_format(PG_FUNCTION_ARGS) {
  bytea* b = PG_GETARG_BYTEA_PP(0);
  const char* name = nullptr;
  flock_guard([&] { name = flock::to_string(flock::detect_format(bytes_of(b))); });
  PG_RETURN_TEXT_P(cstring_to_text(name));
}

Datum flock_model_sha256(PG_FUNCTION_ARGS) {
  bytea* b = PG_GETARG_BYTEA_PP(0);
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(b)), VARSIZE_ANY_EXHDR(b), sha);
  PG_RETURN_TEXT_P(cstring_to_text(sha));
}

Datum flock_model_signature(PG_FUNCTION_ARGS) {
  bytea* b = PG_GETARG_BYTEA_PP(0);
  ModelHandle* keep = new_model_handle(CurrentMemoryContext);
  const flock::Model* model = compiled(b, keep);
  char* json = nullptr;
  flock_guard([&] {
    std::string s = model->signature_json();
    json = static_cast<char*>(std::malloc(s.size() + 1));
    if (!json) throw std::bad_alloc();
    std::memcpy(json, s.c_str(), s.size() + 1);
  });
  char* copy = pstrdup(json);
  std::free(json);
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(copy)));
}

// flock._prepare_model(bytes, format, features): validates the bytes in the given format, embeds
// feature names when given, and returns the model value to store.
Datum flock_prepare_model(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model bytes must not be NULL")));
  bytea* b = PG_GETARG_BYTEA_PP(0);
  char* format = PG_ARGISNULL(1) ? pstrdup("auto") : text_to_cstring(PG_GETARG_TEXT_PP(1));
  int nfeatures = -1;
  char** features = nullptr;
  if (!PG_ARGISNULL(2)) {
    ArrayType* arr = PG_GETARG_ARRAYTYPE_P(2);
    Datum* elems;
    bool* nulls;
    if (ARR_NDIM(arr) > 1)
      ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR), errmsg("features must be a one-dimensional text[]")));
    deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nfeatures);
    features = static_cast<char**>(palloc0(sizeof(char*) * (nfeatures + 1)));
    for (int k = 0; k < nfeatures; ++k) {
      if (nulls[k])
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("feature name %d is NULL", k + 1),
                        errhint("Give every feature a name, in the model's input order.")));
      features[k] = TextDatumGetCString(elems[k]);
    }
  }

  // The format name is checked here (a plain parse, no model involved); the model itself, with its
  // feature names embedded when given, is loaded in the checker, which returns the final bytes.
  const char* fmt_name = nullptr;
  flock_guard([&] { fmt_name = flock::to_string(flock::parse_format(format)); });
  bytea* value = check_model_isolated(b, fmt_name, nfeatures, features);
  char sha[kSha256HexSize];
  sha256_hex(reinterpret_cast<const uint8*>(VARDATA_ANY(value)), VARSIZE_ANY_EXHDR(value), sha);
  flock_guard([&] { cached_model(sha, bytes_of(value)); });
  PG_RETURN_BYTEA_P(value);
}
