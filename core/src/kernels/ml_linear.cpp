#include "flock/kernel.hpp"

namespace flock {

void register_ml_linear_kernels(KernelRegistry& r) { (void)r; }

}  // namespace flock
