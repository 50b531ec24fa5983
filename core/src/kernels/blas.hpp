// Optional OpenBLAS single-precision GEMM. The core does not link a BLAS: on first use it looks
// for an OpenBLAS shared library (dlopen) and, when it loads one itself, loads it single threaded
// (OPENBLAS_NUM_THREADS=1 while it initialises, so no thread pool starts inside a PostgreSQL
// backend). When none is found, or one already loaded in the process runs several threads, the
// callers keep their Eigen path. FLOCK_NO_BLAS=1 in the environment turns it off.
#pragma once

#include <cstdint>

namespace flock::kernels {

// C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when trans_*. False (nothing
// done) when no usable OpenBLAS is available or a dimension does not fit an int.
bool blas_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Whether blas_sgemm is backed by OpenBLAS in this process.
bool blas_available();

}  // namespace flock::kernels
