#include "flock/kernel.hpp"

namespace flock {

void register_ml_tree_kernels(KernelRegistry& r) { (void)r; }

}  // namespace flock
