// Single-precision GEMM through oneDNN (Debian libdnnl). oneDNN picks its kernel for the CPU it runs
// on (AVX-512, AVX2, ...) by JIT at run time, so the product reaches the widest vector unit without
// any environment variable and without building for one CPU; measured against OpenBLAS and BLIS in
// bench/gemm (README "Dense kernels"). The Debian build runs oneDNN on OpenMP: every call sets the
// calling thread's OpenMP team size to 1 first, so no thread pool ever starts inside a PostgreSQL
// backend. FLOCK_NO_BLAS=1 in the environment keeps the callers on Eigen (a fallback and an oracle).
#pragma once

#include <cstdint>

namespace flock::kernels {

// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when trans_*. False (nothing
// done) when the fast path is off or oneDNN reports an error: the caller then computes it itself.
bool sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Whether sgemm is on (oneDNN) in this process.
bool sgemm_available();

// Sets the calling thread's OpenMP team size to one; every oneDNN call is preceded by it.
void single_thread_openmp();

}  // namespace flock::kernels
