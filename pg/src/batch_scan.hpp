// Batched in-query inference (see batch_scan.cpp).
#pragma once

namespace flock::pg {

extern bool batching_enabled;  // GUC flock.batching
extern int batch_size;         // GUC flock.batch_size

// Registers the CustomScan methods and chains the planner hook. Called from _PG_init.
void install_batching();

}  // namespace flock::pg
