// Isolated validation of untrusted model bytes: the checker process (flock-model-check) and the
// GUCs that bound it. Plain PostgreSQL code: call from PostgreSQL frames only, never inside
// flock_guard.
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

// Registers flock.model_checker, flock.model_check_cpu_time and flock.model_check_memory.
void define_model_check_gucs();

// Runs the full load of `bytes` (parse, checker, shape inference, compile, trial run) in
// flock-model-check under the rlimits, with the session's flock.max_tensor_elements, and raises a
// clean ERROR if the model is rejected or the checker dies. `format` is "auto", "onnx" or
// "xgboost". With nfeatures >= 0 the checker embeds those feature names and validates the result.
// Returns the bytes that passed: `bytes` itself, or the new bytes with the names embedded.
bytea* check_model_isolated(bytea* bytes, const char* format, int nfeatures, char** features);

}  // namespace flock::pg
