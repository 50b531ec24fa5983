// `flockctl trace REF --row 'SQL'`: one prediction traced (flock.trace), printed for a terminal.
#pragma once

#include <string>

#include "options.hpp"

namespace flock::cli {

int cmd_trace(const Invocation& inv);

// The readable form of a flock.trace document (JSON text). Throws Failure when it is not one.
std::string render_trace(const std::string& trace_json);

}  // namespace flock::cli
