// `flockctl report REF --html FILE`: a self-contained HTML page about one model version.
#pragma once

#include "options.hpp"

namespace flock::cli {

int cmd_report(const Invocation& inv);

}  // namespace flock::cli
