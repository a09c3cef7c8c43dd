#include "tensorpar/kernels/gemm.hpp"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/gemv.hpp"

namespace tensorpar {

void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  TP_PROFILE_SCOPE("gemm f32 (all)");
  if (K == 0) {  // oneDNN rejects K = 0; the product is empty, so C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  // Decode: a few rows times a weight stored (N, K) is one pass over the weight; streamed in order
  // it runs at the memory bandwidth, where oneDNN's sgemm reached ~60-70% of it at M = 1 (kernels/gemv.hpp).
  // Without AVX-512 (AVX2 only) our kernel lost to oneDNN at M = 1 (0.87-0.98x, bench_gemv on Zen 3) and
  // won from M = 2 up (1.74x at M = 4), so single-row decode stays with oneDNN there.
  if (M <= kGemvMaxRows && (M > 1 || gemv_has_avx512()) && trans_a == Trans::No && trans_b == Trans::Yes &&
      alpha == 1.0f && beta == 0.0f)
    return gemv_f32(C, ldc, A, lda, B, ldb, M, N, K);
  const dnnl_status_t status = dnnl_sgemm(trans_a == Trans::Yes ? 'T' : 'N', trans_b == Trans::Yes ? 'T' : 'N',
                                          M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  TP_CHECK(status == dnnl_success, Error, "oneDNN sgemm failed (status {}) for M={} N={} K={} lda={} ldb={} ldc={}",
           int(status), M, N, K, lda, ldb, ldc);
}

void set_num_threads(int threads) { omp_set_num_threads(threads < 1 ? 1 : threads); }
int num_threads() { return omp_get_max_threads(); }

}  // namespace tensorpar
