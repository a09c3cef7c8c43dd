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

// The same on AVX2 + FMA (8 lanes). The tail's masked steps go to the accumulators in turn, so no
// lane sums more than K/(8A) + 1 products before the accumulators and lanes are added (the rounding
// bound in tests/kernels/test_gemv.cpp).
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int M>
__attribute__((target("avx2,fma"))) void row_avx2(float* y, int64_t ldy, const float* x, int64_t ldx, const float* w,
                                                  int64_t K) {
  constexpr int A = M == 1 ? 4 : 2;
  constexpr int64_t kStep = 8 * A;
  __m256 acc[M][A];
  for (int m = 0; m < M; ++m)
    for (int a = 0; a < A; ++a) acc[m][a] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + kStep <= K; k += kStep)
    for (int a = 0; a < A; ++a) {
      const __m256 wv = _mm256_loadu_ps(w + k + 8 * a);
      for (int m = 0; m < M; ++m) acc[m][a] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * ldx + k + 8 * a), acc[m][a]);
    }
  for (int a = 0; k < K; k += 8, ++a) {  // tail: masked 8-wide steps (maskload reads nothing masked off)
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(K - k, 8))),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 wv = _mm256_maskload_ps(w + k, mask);
    for (int m = 0; m < M; ++m)
      acc[m][a] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x + m * ldx + k, mask), acc[m][a]);
  }
  for (int m = 0; m < M; ++m) {
    __m256 sum = acc[m][0];
    for (int a = 1; a < A; ++a) sum = _mm256_add_ps(sum, acc[m][a]);
    y[m * ldy] = hsum(sum);
  }
}

// Rows in order, so W is read as one sequential stream (rows are contiguous when ldw == K): measured
// faster here than interleaving several rows (several streams 4 KB apart) or oneDNN's sgemm, and
// software prefetch ahead of the stream did not help (docs/inference.md). With several threads
// each takes a contiguous range of rows: one stream per thread.
template <int M, void (*Row)(float*, int64_t, const float*, int64_t, const float*, int64_t)>
void gemv_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t N,
               int64_t K) {
  // threads only when there is enough work to pay for waking them (one decode matrix is 1-130 MB)
#pragma omp parallel for schedule(static) if (N * K >= (int64_t(1) << 16))
  for (int64_t n = 0; n < N; ++n) Row(y + n, ldy, x, ldx, W + n * ldw, K);
}

template <template <int> class Kernel>
void dispatch_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t M,
                   int64_t N, int64_t K) {
  switch (M) {
    case 1: return gemv_rows<1, Kernel<1>::row>(y, ldy, x, ldx, W, ldw, N, K);
    case 2: return gemv_rows<2, Kernel<2>::row>(y, ldy, x, ldx, W, ldw, N, K);
    case 3: return gemv_rows<3, Kernel<3>::row>(y, ldy, x, ldx, W, ldw, N, K);
    default: return gemv_rows<4, Kernel<4>::row>(y, ldy, x, ldx, W, ldw, N, K);
  }
}

template <int M>
struct Avx512 {
  static constexpr auto row = row_avx512<M>;
};
template <int M>
struct Avx2 {
  static constexpr auto row = row_avx2<M>;
};

}  // namespace

bool gemv_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}

bool gemv_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0;
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
  if (gemv_has_avx512()) return dispatch_rows<Avx512>(y, ldy, x, ldx, W, ldw, M, N, K);
  if (gemv_has_avx2()) return dispatch_rows<Avx2>(y, ldy, x, ldx, W, ldw, M, N, K);
  gemv_f32_reference(y, ldy, x, ldx, W, ldw, M, N, K);
}

}  // namespace tensorpar
