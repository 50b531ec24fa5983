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

extern int train_memory_kb;
extern int train_notice_rounds;

}  // namespace flock::pg
