// flock.explain's settings (explain.cpp).
#pragma once

namespace flock::pg {

// flock.explain_kernel_samples, flock.explain_kernel_seed, flock.explain_method. Called from _PG_init.
void define_explain_gucs();

}  // namespace flock::pg
