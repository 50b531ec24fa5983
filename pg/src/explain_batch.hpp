// flock.explain batched by the FlockBatchScore node (batch_exec.cpp): one core explain call per
// batch of rows (explain.cpp), the background read once per call site as for the row-at-a-time
// function.
#pragma once

#include "pg.hpp"  // must come first

#include "predict.hpp"

namespace flock::pg {

// A batched flock.explain call: its arguments but the input, and the background it read.
struct ExplainCall;

// `st`: the call's resolved model. model_arg: its model argument (read again, as current_user, to
// bind the background); background_ref: nullptr for none; output: nullptr for the default.
// Allocated in `mcxt`, which must outlive the call (the background is kept there).
ExplainCall* new_explain_call(MemoryContext mcxt, CallState* st, Datum model_arg, bool interactions,
                              text* background_ref, const char* output);
// Bytes one row of a batch takes in the explanation and its results (an estimate for sizing
// batches, added to call_bytes_per_row: see flock.batch_memory).
Size explain_bytes_per_row(const ExplainCall* call);
// Explains n rows (non-NULL inputs) in one core call: out[r] is row r's flock.explain result
// (jsonb), allocated in CurrentMemoryContext. Raises flock.explain's errors.
void explain_batch(ExplainCall* call, const RowValues* rows, int n, Datum* out);

}  // namespace flock::pg
