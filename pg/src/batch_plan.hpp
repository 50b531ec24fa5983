// Batched in-query inference: the GUCs and the planner hook (batch_plan.cpp, batch_exec.cpp).
#pragma once

namespace flock::pg {

extern bool batching_enabled;  // GUC flock.batching
// GUC flock.share_models_with_workers: batch nodes under a Gather get their models from the leader
// (shared_model.cpp). Off: each worker reads and compiles them itself (for comparison).
extern bool share_models_with_workers;
// GUC flock.read_heap_pages: a batch node over a plain sequential scan reads its pages itself
// (heap_reader.hpp). Off: rows come through the scan node (for comparison).
extern bool read_heap_pages;
extern int batch_size;         // GUC flock.batch_size
// Its default: the best of bench/indb's sweep (64-16,384 rows) across the four benchmark models.
constexpr int kDefaultBatchSize = 256;
extern int batch_memory_kb;  // GUC flock.batch_memory: the rows of a batch are capped to fit it
constexpr int kDefaultBatchMemoryKb = 64 * 1024;

// Registers the CustomScan methods and chains the planner hook. Called from _PG_init.
void install_batching();

}  // namespace flock::pg
