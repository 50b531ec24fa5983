#include "gemm.hpp"

#include <dlfcn.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdlib>
#include <cstring>

namespace flock::kernels {
namespace {

bool fast_path_on() {
  static const bool on = [] {
    const char* off = std::getenv("FLOCK_NO_BLAS");
    return !(off && *off && std::strcmp(off, "0") != 0);
  }();
  return on;
}

}  // namespace

// oneDNN's OpenMP runtime sizes its team with omp_get_max_threads(), a per-thread setting: set to
// one before every call (a store), since other code in the process may raise it (XGBoost's
// training, flock.train). Looked up rather than linked, so the core does not depend on which
// OpenMP runtime the compiler would pick (libdnnl brings libgomp).
void single_thread_openmp() {
  using SetThreads = void (*)(int);
  static const auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set) set(1);
}

bool sgemm_available() { return fast_path_on(); }

bool sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (!fast_path_on() || m < 0 || n < 0 || k < 0) return false;
  single_thread_openmp();
  return dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) ==
         dnnl_success;
}

}  // namespace flock::kernels
