// Handing a parallel query's resolved models from the leader to its workers (FlockBatchScore's
// DSM chunk, batch_exec.cpp). A worker is a fresh process per query: resolving a model itself means
// a catalog query, reading the model's bytes out of TOAST (pglz: about 45 ms for a 10 MB forest)
// and compiling them. The leader instead writes, per call, the resolution it made (sha256, label,
// audit policy) and the model's bytes into the query's dynamic shared memory; the worker compiles
// those bytes into its own cache, skipping the catalog and TOAST. The leader keeps the bytes of the
// models it shared (within flock.model_cache_memory), so a session running parallel queries reads
// them once. Plain PostgreSQL code: the C++ work runs inside flock_guard.
#pragma once

#include "pg.hpp"  // must come first

#include "predict.hpp"

namespace flock::pg {

// Per call of a node: whether it is shared (share[k]: a prediction, not a pinned or explain call),
// and for a flock.model value, the value (model_values[k]; else unused).
struct SharedCalls {
  int ncalls;
  CallState** calls;
  bool* share;
  const Datum* model_values;
};

// Leader: the bytes of the chunk for these calls, reading (once per session) the bytes of models
// not kept yet. `segment` is what the query's shared memory holds already (the other nodes'
// chunks: a parallel Append has a batch node per partition): a call whose bytes would take it past
// flock.model_cache_memory, or that cannot be kept, is left to the workers (share[k] cleared).
Size shared_models_size(const SharedCalls& sc, Size segment);
// Leader: writes the chunk (`size` bytes, as shared_models_size returned, for the same `share`).
void shared_models_write(const SharedCalls& sc, void* chunk, Size size);
// Worker: resolves call k as the leader did, from the chunk (its sizes and text checked); false
// when the leader did not share it (the caller resolves it as usual).
bool resolve_shared_model(CallState* st, const void* chunk, int k);

}  // namespace flock::pg
