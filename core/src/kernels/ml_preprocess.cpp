#include "flock/kernel.hpp"

namespace flock {

void register_ml_preprocess_kernels(KernelRegistry& r) { (void)r; }

}  // namespace flock
