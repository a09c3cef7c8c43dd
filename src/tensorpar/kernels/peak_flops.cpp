#include "tensorpar/kernels/peak_flops.hpp"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tensorpar {

namespace {

using Clock = std::chrono::steady_clock;

// Written by the kernels so the compiler cannot drop the chains as dead code.
volatile float g_sink = 0;

// Iterations per chunk: 16 x 2^16 = 1M instructions, ~0.13 ms at 2 per cycle and 4 GHz: long
// against the clock's overhead (~20 ns), short against scheduler time slices, so most chunks run
// undisturbed even when other processes share the core.
constexpr int64_t kChunkIters = 1 << 16;

// Call `chunk()` (which does `flops_per_chunk` flops) repeatedly for ~seconds; return the best rate.
template <class F>
double best_rate(double seconds, double flops_per_chunk, F&& chunk) {
  chunk();  // warm up: wakes the vector units up to full width/frequency
  double best = 0;
  const auto start = Clock::now();
  for (;;) {
    const auto t0 = Clock::now();
    chunk();
    const auto t1 = Clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    if (dt > 0) best = std::max(best, flops_per_chunk / dt * 1e-9);
    if (std::chrono::duration<double>(t1 - start).count() >= seconds) break;
  }
  return best;
}

// 16 independent chains: FMA latency 4 cycles x 2 FMA pipes needs >= 8 in flight; 16 leaves slack
// and still fits in the 32 zmm registers with the two operands (no spills: checked with objdump).
constexpr int kChains = 16;

#define TP_REP16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

__attribute__((target("avx512f"))) void fma_chunk_avx512(int64_t iters) {
  // acc = acc * a + b converges to b / (1 - a): no overflow, no denormals, however long it runs.
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
#define TP_DECL(i) __m512 acc##i = _mm512_set1_ps(float(i));
  TP_REP16(TP_DECL)
#undef TP_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define TP_STEP(i) acc##i = _mm512_fmadd_ps(acc##i, a, b);
    TP_REP16(TP_STEP)
#undef TP_STEP
  }
  __m512 s = acc0;
#define TP_SUM(i) s = _mm512_add_ps(s, acc##i);
  TP_REP16(TP_SUM)
#undef TP_SUM
  // (not _mm512_reduce_add_ps: GCC 12 warns -Wuninitialized inside it)
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  g_sink = out[0] + out[15];
}

__attribute__((target("avx2,fma"))) void fma_chunk_avx2(int64_t iters) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  // 12 chains: 16 ymm registers minus the two operands and headroom.
#define TP_REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define TP_DECL(i) __m256 acc##i = _mm256_set1_ps(float(i));
  TP_REP12(TP_DECL)
#undef TP_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define TP_STEP(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
    TP_REP12(TP_STEP)
#undef TP_STEP
  }
  __m256 s = acc0;
#define TP_SUM(i) s = _mm256_add_ps(s, acc##i);
  TP_REP12(TP_SUM)
#undef TP_SUM
#undef TP_REP12
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  g_sink = out[0] + out[7];
}

__attribute__((target("avx512f,avx512bf16"))) void dpbf16_chunk(int64_t iters) {
  // acc += x*y + x*y per lane with x*y ~ 1e-6: grows by ~0.07 per chunk, never overflows.
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3a83);  // bf16 ~1.0e-3
  const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3a83);
#define TP_DECL(i) __m512 acc##i = _mm512_set1_ps(float(i));
  TP_REP16(TP_DECL)
#undef TP_DECL
  for (int64_t it = 0; it < iters; ++it) {
#define TP_STEP(i) acc##i = _mm512_dpbf16_ps(acc##i, x, y);
    TP_REP16(TP_STEP)
#undef TP_STEP
  }
  __m512 s = acc0;
#define TP_SUM(i) s = _mm512_add_ps(s, acc##i);
  TP_REP16(TP_SUM)
#undef TP_SUM
  // (not _mm512_reduce_add_ps: GCC 12 warns -Wuninitialized inside it)
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  g_sink = out[0] + out[15];
}

#undef TP_REP16

}  // namespace

double measure_peak_gflops_f32(double seconds) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return best_rate(seconds, double(kChunkIters) * kChains * 16 * 2, [] { fma_chunk_avx512(kChunkIters); });
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return best_rate(seconds, double(kChunkIters) * 12 * 8 * 2, [] { fma_chunk_avx2(kChunkIters); });
  return 0;
}

double measure_peak_gflops_bf16(double seconds) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) return 0;
  return best_rate(seconds, double(kChunkIters) * kChains * 64, [] { dpbf16_chunk(kChunkIters); });
}

PeakFlops measure_peak_flops() { return {measure_peak_gflops_f32(), measure_peak_gflops_bf16()}; }

}  // namespace tensorpar
