// `flockctl train`: flock.train from the shell (issue 16).
#pragma once

#include "options.hpp"

namespace flock::cli {

int cmd_train(const Invocation& inv);

}  // namespace flock::cli
