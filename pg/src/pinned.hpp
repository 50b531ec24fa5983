// Pinned predictions for scoring on shards (issue 18): pinned.cpp.
#pragma once

#include "pg.hpp"  // must come first
#include "predict.hpp"

namespace flock::pg {

// Whether `type` is flock.pinned ('name@N#sha256').
bool is_pinned_type(Oid type);
// The batch node's resolution of a pinned call: the node must hold name@N with those bytes (else
// an error naming it), resolved as flock.predict resolves name@N.
void resolve_pinned(CallState* st, Datum pin);

// flock.node_name: how this node names itself in the errors of pinned predictions.
void define_pinned_gucs();

}  // namespace flock::pg
