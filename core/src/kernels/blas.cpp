#include "blas.hpp"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>

namespace flock::kernels {
namespace {

// cblas_sgemm with the CBLAS enums as ints (cblas.h is not needed to build).
constexpr int kCblasRowMajor = 101;
constexpr int kCblasNoTrans = 111;
constexpr int kCblasTrans = 112;
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                         int);
using ThreadsFn = int (*)();

SgemmFn load_sgemm() {
  if (const char* off = std::getenv("FLOCK_NO_BLAS"); off && *off && std::strcmp(off, "0") != 0) return nullptr;
  for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
    void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!handle) {
      // Not in the process yet: load it with one thread. OpenBLAS reads the variable while it
      // initialises; the caller's value is restored right after.
      const char* prev = std::getenv("OPENBLAS_NUM_THREADS");
      const std::string saved = prev ? prev : "";
      setenv("OPENBLAS_NUM_THREADS", "1", 1);
      handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (prev) setenv("OPENBLAS_NUM_THREADS", saved.c_str(), 1);
      else unsetenv("OPENBLAS_NUM_THREADS");
    }
    if (!handle) continue;
    auto sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
    auto threads = reinterpret_cast<ThreadsFn>(dlsym(handle, "openblas_get_num_threads"));
    // The core is single threaded: an OpenBLAS that someone else started with a pool is not used.
    if (sgemm && threads && threads() == 1) return sgemm;
    dlclose(handle);
  }
  return nullptr;
}

SgemmFn sgemm_fn() {
  static const SgemmFn fn = load_sgemm();
  return fn;
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

}  // namespace

bool blas_available() { return sgemm_fn() != nullptr; }

bool blas_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const SgemmFn fn = sgemm_fn();
  if (!fn) return false;
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    if (!fits_int(v)) return false;
  fn(kCblasRowMajor, trans_a ? kCblasTrans : kCblasNoTrans, trans_b ? kCblasTrans : kCblasNoTrans,
     static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
     static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  return true;
}

}  // namespace flock::kernels
