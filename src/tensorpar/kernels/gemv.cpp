#include "tensorpar/kernels/gemv.hpp"

#include <immintrin.h>

#include <algorithm>

#include "tensorpar/core/error.hpp"

// GCC 12 warns inside its own AVX-512 headers (the _mm512_undefined_ps operand of
// _mm512_reduce_add_ps), not about this code; as in quantized_matmul.cpp.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tensorpar {

namespace {

__attribute__((target("avx512f"))) inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// y[m * ldy] = x[m] · w for the M rows of x and one row w (K) of W. A accumulators per x row: four
// independent FMA chains at M = 1 (the FMA latency is hidden by M x A chains), two for M > 1.
template <int M>
__attribute__((target("avx512f"))) void row_avx512(float* y, int64_t ldy, const float* x, int64_t ldx, const float* w,
                                                    int64_t K) {
  constexpr int A = M == 1 ? 4 : 2;
  constexpr int64_t kStep = 16 * A;
  __m512 acc[M][A];
  for (int m = 0; m < M; ++m)
    for (int a = 0; a < A; ++a) acc[m][a] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + kStep <= K; k += kStep)
    for (int a = 0; a < A; ++a) {
      const __m512 wv = _mm512_loadu_ps(w + k + 16 * a);
      for (int m = 0; m < M; ++m) acc[m][a] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + m * ldx + k + 16 * a), acc[m][a]);
    }
  for (; k < K; k += 16) {  // tail: masked 16-wide steps
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    const __m512 wv = _mm512_maskz_loadu_ps(mask, w + k);
    for (int m = 0; m < M; ++m) acc[m][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x + m * ldx + k), acc[m][0]);
  }
  for (int m = 0; m < M; ++m) {
    __m512 sum = acc[m][0];
    for (int a = 1; a < A; ++a) sum = _mm512_add_ps(sum, acc[m][a]);
    y[m * ldy] = hsum(sum);
  }
}

// Rows in order, so W is read as one sequential stream (rows are contiguous when ldw == K): measured
// faster here than interleaving several rows (several streams 4 KB apart) or oneDNN's sgemm, and
// software prefetch ahead of the stream did not help (docs/inference.md). With several threads
// each takes a contiguous range of rows: one stream per thread.
template <int M>
void gemv_avx512(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t N,
                 int64_t K) {
  // threads only when there is enough work to pay for waking them (one decode matrix is 1-130 MB)
#pragma omp parallel for schedule(static) if (N * K >= (int64_t(1) << 16))
  for (int64_t n = 0; n < N; ++n) row_avx512<M>(y + n, ldy, x, ldx, W + n * ldw, K);
}

}  // namespace

bool gemv_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}

void gemv_f32_reference(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t M,
                        int64_t N, int64_t K) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(x[m * ldx + k]) * double(W[n * ldw + k]);
      y[m * ldy + n] = float(s);
    }
}

void gemv_f32(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t M, int64_t N,
              int64_t K) {
  TP_CHECK(M >= 1 && M <= kGemvMaxRows && N >= 0 && K >= 0 && ldx >= K && ldw >= K && ldy >= N, ShapeError,
           "gemv_f32: M={} N={} K={} ldx={} ldw={} ldy={} (M must be 1..{}, strides at least the row length)", M, N,
           K, ldx, ldw, ldy, kGemvMaxRows);
  if (N == 0) return;
  if (!gemv_has_avx512()) return gemv_f32_reference(y, ldy, x, ldx, W, ldw, M, N, K);
  switch (M) {
    case 1: return gemv_avx512<1>(y, ldy, x, ldx, W, ldw, N, K);
    case 2: return gemv_avx512<2>(y, ldy, x, ldx, W, ldw, N, K);
    case 3: return gemv_avx512<3>(y, ldy, x, ldx, W, ldw, N, K);
    default: return gemv_avx512<4>(y, ldy, x, ldx, W, ldw, N, K);
  }
}

}  // namespace tensorpar
