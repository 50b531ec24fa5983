// flock.trace(model, input[, max_values]): one row's prediction with everything it went through,
// as jsonb. The model and the row are resolved and bound exactly as flock.predict does it
// (resolve.cpp, bind.cpp, feature_batch in score.cpp); the trace itself is the core's
// (flock/trace.hpp). This file adds who the model is: name, version and sha256, and under an
// audit policy records the row as scored.
#include "flock/trace.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#include "call_state.hpp"
#include "guard.hpp"
#include "pg.hpp"  // must come first

extern "C" {
#include "lib/stringinfo.h"
#include "utils/json.h"
}
#undef flock

extern "C" {
PG_FUNCTION_INFO_V1(flock_trace);
}

namespace flock::pg {

namespace {

// {"model": {...}, then the core's members: the core's object with the model put first.
char* with_model(const CallState* st, const char* core_json) {
  StringInfoData buf;
  initStringInfo(&buf);
  appendStringInfoString(&buf, "{\"model\": {");
  if (!st->model_is_value) {
    // label is "name@version" (resolve_by_name); the name may hold '@' itself.
    const char* at = strrchr(st->label, '@');
    char* name = pnstrdup(st->label, at ? static_cast<Size>(at - st->label) : strlen(st->label));
    appendStringInfoString(&buf, "\"name\": ");
    escape_json(&buf, name);
    appendStringInfo(&buf, ", \"version\": %s, \"reference\": ", at ? at + 1 : "null");
    escape_json(&buf, st->ref);
    appendStringInfoString(&buf, ", ");
  } else {
    appendStringInfoString(&buf, "\"name\": null, \"version\": null, ");
  }
  char sha[kSha256HexSize + 1];
  memcpy(sha, st->model_sha, kSha256HexSize);
  sha[kSha256HexSize] = '\0';
  appendStringInfo(&buf, "\"sha256\": \"%s\"}", sha);
  // core_json is an object: "{...}"; splice its members after ours.
  if (core_json[0] == '{' && core_json[1] != '}')
    appendStringInfo(&buf, ", %s", core_json + 1);
  else
    appendStringInfoChar(&buf, '}');
  return buf.data;
}

}  // namespace

}  // namespace flock::pg

using namespace flock::pg;

Datum flock_trace(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  if (PG_ARGISNULL(1)) PG_RETURN_NULL();  // no row, nothing to trace (as flock.predict)
  int64 max_values = flock::kDefaultTraceMaxValues;
  if (PG_NARGS() > 2 && !PG_ARGISNULL(2)) max_values = PG_GETARG_INT32(2);
  // Past ten million values the document would outgrow a jsonb (1 GB) long before it told more.
  constexpr int64 kMaxTraceValues = 10000000;
  if (max_values < 0 || max_values > kMaxTraceValues)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("max_values must be between 0 and %lld", static_cast<long long>(kMaxTraceValues)),
                    errhint("Give the number of intermediate values to list, e.g. 10000; 0 lists none.")));
  CallState* st = call_state(fcinfo);
  resolve_model(st, PG_GETARG_DATUM(0));
  RowValues row = extract_row(st, PG_GETARG_DATUM(1));
  const flock::Model* model = st->model;
  const char* label = st->label;
  char* traced = nullptr;  // malloc'd: nothing is palloc'd under the guard
  flock_guard([&] {
    flock::TraceOptions options;
    options.max_values = max_values;
    const std::string text = flock::trace_json(*model, feature_batch(model, label, &row, 1), options);
    traced = strdup(text.c_str());
    if (!traced) throw std::bad_alloc();
  });
  char* json = with_model(st, traced);
  std::free(traced);
  // A trace scores the row: under an audit policy it is recorded as the prediction it shows
  // (predict_label for classifiers, predict_tensor for other models, which every model has), so
  // tracing is no way to score rows off the record. deliver (score.cpp) samples and enqueues.
  if (st->audit_mode != AuditMode::Off) {
    const bool classifier = model->signature().task == flock::Task::Classification;
    Datum audited;
    score_rows(st, &row, 1, classifier ? Want::Label : Want::Tensor, &audited);
  }
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
