// The flock subcommands. Each returns the process exit status or throws UsageError, InputError
// (exit 2) or Failure (exit 1).
#pragma once

#include "options.hpp"

namespace flock::cli {

int cmd_register(const Invocation& inv);
int cmd_models(const Invocation& inv);
int cmd_info(const Invocation& inv);
int cmd_drop(const Invocation& inv);

}  // namespace flock::cli
