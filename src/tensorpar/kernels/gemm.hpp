// GEMM front end. Row-major C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
// Backed by oneDNN's sgemm, which picks AVX-512 kernels by CPUID whatever the environment says:
// measured here at 88-94% of the core's FMA peak. Debian's OpenBLAS 0.3.21 reaches 85-92% only
// when OPENBLAS_CORETYPE is unset or names an AVX-512 core, and 44-48% under the
// OPENBLAS_CORETYPE=Haswell these machines export. See bench/README.md.
#pragma once
#include <cstdint>

namespace tensorpar {

enum class Trans : bool { No = false, Yes = true };

void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Threads used by GEMMs and the OpenMP loops of the kernels in this process.
void set_num_threads(int threads);
int num_threads();

}  // namespace tensorpar
