// flock.train's glue (issue 16): the GUCs, the progress slots in shared memory.
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

// GUCs flock.train_memory and flock.train_notice_rounds; with shared_preload_libraries, the
// progress slots read by flock.train_progress. Called from _PG_init.
void install_training();

// This backend's progress slot (no-ops when the slots do not exist, flock not preloaded).
void train_progress_begin(const char* model, const char* algorithm, int64 rows, int features);
void train_progress_rows(int64 rows);
void train_progress_update(const char* phase, int round, int rounds, double metric);
void train_progress_end();

// flock.train's rows captured while its snapshot is written (train.cpp), so that the fit does not
// read the table it has just written: every numeric column as float4 (NaN for NULL), in the
// order the rows were written, which is the table's physical order (a new table, bulk-inserted).
// Requested for the current transaction by flock._train_capture_next(); taken by the next
// snapshot_write, which adds its rows; handed to flock._train_fit of that table. Dropped past
// flock.train_memory and when the (sub)transaction that made it aborts.
struct TrainingCapture;
TrainingCapture* training_capture_begin(TupleDesc desc);  // nullptr when not requested
void training_capture_add(TrainingCapture* capture, const Datum* values, const bool* nulls);
void training_capture_end(TrainingCapture* capture, Oid relid);
void training_capture_cancel_request();  // the snapshot took the general path: nothing to capture

extern int train_memory_kb;
extern int train_notice_rounds;

}  // namespace flock::pg
