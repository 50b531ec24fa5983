// Governance subcommands: registering a model together with its training run, and lineage.
#pragma once

#include "options.hpp"

namespace flock::cli {

// True when `register` was given any training-capture option (--dataset, --training-code, ...).
bool wants_training_capture(const Invocation& inv);
// `register` with training capture: the model and its training run in one transaction.
int cmd_register_with_training(const Invocation& inv);
// `lineage REF [--dot | --openlineage] [--direction D]`.
int cmd_lineage(const Invocation& inv);

}  // namespace flock::cli
