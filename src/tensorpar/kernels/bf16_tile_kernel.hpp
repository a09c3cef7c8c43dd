// The AVX512-BF16 register tile shared by the hand-written bf16 GEMMs (bf16_tile_gemm.cpp for
// attention's blocks, bf16_panel_gemm.cpp for the linear layers), and the 16 x 16 transpose their
// packers use. Internal to kernels/: include only from a .cpp that runs it on CPUs with AVX512-BF16.
#pragma once
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and -W(maybe-)uninitialized reports
// that at inlined calls (a known false positive, fixed in later GCCs). Clang has no such warning.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define TP_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

namespace tensorpar::detail {

// Register tile: up to 6 rows x 4 vectors of 16 columns = 24 accumulators, plus 4 B vectors and one
// broadcast A pair: 29 of the 32 zmm registers. One k pair costs 4 loads, 6 broadcasts, 24 vdpbf16ps.
constexpr int kMaxRows = 6;
constexpr int kMaxVectors = 4;

// The 32-bit pair at p, read as bytes: the operands are often bf16 arrays.
inline uint32_t load_pair(const uint32_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// C rows [0, MR) x columns [0, 16 NV) (the last vector masked by `last`) = alpha * sum over pairs
// [p0, p1) of A B, + bias[j] if bias, + beta * C if beta != 0. A's pair (r, p) at a[r * a_row +
// p * a_pair] and B as in bf16_tile_gemm.hpp.
template <int MR, int NV>
TP_BF16_TARGET void tile(int64_t p0, int64_t p1, float alpha, const uint32_t* a, int64_t a_row, int64_t a_pair,
                         const uint32_t* b, int64_t ldb, float beta, float* c, int64_t ldc, __mmask16 last,
                         const float* bias) {
  __m512 acc[MR][NV];
  // Unrolled by pragma, not left to -O3: the accumulators must live in registers.
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = p0; p < p1; ++p) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + p * ldb + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(load_pair(a + r * a_row + p * a_pair)));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : __mmask16(0xffff);
      float* cp = c + r * ldc + 16 * v;
      __m512 x = _mm512_mul_ps(acc[r][v], va);
      if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, bias + 16 * v));
      if (beta != 0.0f) x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, cp), vb, x);
      _mm512_mask_storeu_ps(cp, mask, x);
    }
}

using TileFn = void (*)(int64_t, int64_t, float, const uint32_t*, int64_t, int64_t, const uint32_t*, int64_t, float,
                        float*, int64_t, __mmask16, const float*);

template <int R>
constexpr std::array<TileFn, kMaxVectors> tiles_of_rows() {
  return {&tile<R, 1>, &tile<R, 2>, &tile<R, 3>, &tile<R, 4>};
}

// kTiles[rows - 1][vectors - 1]
inline constexpr std::array<std::array<TileFn, kMaxVectors>, kMaxRows> kTiles = {
    tiles_of_rows<1>(), tiles_of_rows<2>(), tiles_of_rows<3>(),
    tiles_of_rows<4>(), tiles_of_rows<5>(), tiles_of_rows<6>()};

// The lanes [0, n) of a 16-lane mask.
inline __mmask16 first_n(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// In place: r[i] element j becomes r[j] element i (a 16 x 16 matrix of 32-bit values).
TP_BF16_TARGET inline void transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane: (r_i[0] r_i+1[0] r_i[1] r_i+1[1]) and elements 2, 3
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // r[g + e], lane L: rows g..g+3 of column 4L + e
    r[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    r[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    r[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    r[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int e = 0; e < 4; ++e) {  // column 4L + e, lane g = lane L of r[4g + e]: a 4 x 4 transpose of lanes
    const __m512i v0 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x44), v1 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xee);
    const __m512i v2 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xee);
    t[e] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    t[4 + e] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    t[8 + e] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    t[12 + e] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace tensorpar::detail
