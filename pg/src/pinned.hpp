// Pinned predictions for scoring on shards (issue 18): pinned.cpp.
#pragma once

namespace flock::pg {

// flock.node_name: how this node names itself in the errors of pinned predictions.
void define_pinned_gucs();

}  // namespace flock::pg
