// Scoring rows with a resolved model: shared by the prediction functions (one row per call) and
// the batching CustomScan (many rows per model call).
#pragma once

#include "pg.hpp"  // must come first

#include "flock/want.hpp"

namespace flock::pg {

using flock::Want;

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

// Scoring rows straight from their column values into the model's input tensors (reused from
// batch to batch): no RowValues per row. For a binding where every feature is a number (float4,
// float8, int2, int4, int8, bool) and every model input is float or double.
struct ColumnScorer;
// A scorer for rows of `rowtype` whose column a (0-based, attribute order, dropped ones included)
// is values[offset + a], for batches of up to `capacity` rows. nullptr when the row type does not
// bind that way, or does not bind at all (then extract_columns raises the binding's error).
// `feature_read` (nullptr: all): per feature, whether the model reads it (optimize::inputs_read);
// the others are not converted nor written (the model's input holds 0 for them), and their
// columns are not read at all when a NULL in them is no error (with an audit policy every feature
// is read: the records carry them). Allocated in st's memory context.
ColumnScorer* column_scorer(CallState* st, Oid rowtype, int offset, int capacity, const bool* feature_read = nullptr);
// How many leading values of a row column_scorer_add reads.
// (The columns of features not read, past the last one read, are not among them.)
int column_scorer_width(const ColumnScorer* cs);
// Starts a batch (row 0 next).
void column_scorer_start(ColumnScorer* cs);
// Writes the features of row r of the batch (raises no error but out of memory: a NULL the model
// has no handling for is raised by column_scorer_score).
void column_scorer_add(ColumnScorer* cs, int r, const Datum* values, const bool* isnull);
// The same from the slot's stored tuple without deforming it, when the slot holds a heap tuple
// without NULLs whose columns up to the last one read have fixed lengths and the features are all
// float4 into one float input; false (nothing written) otherwise: then deform and column_scorer_add.
bool column_scorer_add_stored(ColumnScorer* cs, int r, TupleTableSlot* slot);
// The same from a heap tuple of descriptor `desc` whose column map[a] (0-based) is the row's
// column a (nullptr: column a), for the batch node's heap reader.
bool column_scorer_add_tuple(ColumnScorer* cs, int r, HeapTupleHeader header, TupleDesc desc, const int* map);
// Scores rows 0..n-1 of the batch like extract_columns() and score_rows() over the same rows: the
// same errors, results and audit records.
void column_scorer_score(ColumnScorer* cs, int n, Want want, Datum* out);
// "name@version" or "model <sha prefix>".
const char* model_label(const CallState* st);
// Bytes one row of a batch takes in the model run and in its features as extracted (an estimate
// for sizing batches; see flock.batch_memory). The model must be resolved.
Size call_bytes_per_row(const CallState* st);

}  // namespace flock::pg
