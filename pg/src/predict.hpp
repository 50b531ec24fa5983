// Scoring rows with a resolved model: shared by the prediction functions (one row per call) and
// the batching CustomScan (many rows per model call).
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

enum class Want { Value, Proba, Label, Tensor };

// A call site's state: its resolved model and record binding. Palloc'd in `mcxt`.
struct CallState;

// One row's feature values, extracted in plain PostgreSQL code.
struct RowValues {
  int n;
  double* num;   // numeric features (NaN for NULL)
  char** str;    // string features (nullptr for NULL)
  bool* isnull;
};

CallState* new_call_state(MemoryContext mcxt, bool model_is_value, bool input_is_record);
// Resolves (or re-validates) the model: a name through the catalog, or a flock.model value.
void resolve_model(CallState* st, Datum model_arg);
// Extracts and checks one non-NULL input (record or float4[]). Allocates in CurrentMemoryContext.
RowValues extract_row(CallState* st, Datum input);
// The same for a row of `rowtype` given as its columns (attribute order, dropped ones included),
// as a scan produces them: no composite value is formed and taken apart again.
RowValues extract_columns(CallState* st, Oid rowtype, const Datum* values, const bool* nulls);
// Scores n rows in one model call; out[r] is allocated in CurrentMemoryContext.
void score_rows(CallState* st, const RowValues* rows, int n, Want want, Datum* out);
// "name@version" or "model <sha prefix>".
const char* model_label(const CallState* st);

}  // namespace flock::pg
