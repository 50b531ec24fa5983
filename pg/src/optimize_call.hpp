// The optimizer's passes that only change how a model runs (issue 13), applied to a call of the
// FlockBatchScore node when it starts: the model is specialized for what the scan below the node
// guarantees about the columns it binds (batch_plan.cpp collects those facts at plan time), and
// the inputs the model still reads are counted. Never an error: whatever it cannot prove safe it
// leaves alone, with a DEBUG1 message saying why.
#pragma once

#include "pg.hpp"  // must come first

#include "batch_node.hpp"
#include "predict.hpp"

namespace flock::pg {

// GUCs (module.cpp): flock.optimizer turns every pass off; each pass has its own.
extern bool optimizer_enabled;     // flock.optimizer
extern bool optimizer_prune;       // flock.optimizer_prune
extern bool optimizer_projection;  // flock.optimizer_projection

// What was done for one call, for EXPLAIN (palloc'd; nullptr: not done).
struct CallOptimization {
  const char* pruned;       // "1,412 of 3,900 nodes, 12 of 100 trees to a leaf (f00 > 1, f01 <= -0.5)"
  const char* inputs_read;  // "5 of 28"
  // Per feature of the call's binding (one per column of the model's single input): whether the
  // model reads it; nullptr: every one. A feature not read may be given any value (0).
  const bool* feature_read;
};

// For a call whose input is a row of `rowtype` read from a table's columns, every row of which
// satisfies `facts`: replaces the call's resolved model by one specialized for them (scoring those
// rows exactly alike; never stored in the model cache, but kept in the per-backend cache of
// specialized models keyed by the model's sha256 and the constraints, so it is specialized once),
// and counts the inputs it reads. The facts' parameters must be settled (batch_exec.cpp).
CallOptimization optimize_call(CallState* st, Oid rowtype, const ColumnFact* facts, int nfacts);

}  // namespace flock::pg
