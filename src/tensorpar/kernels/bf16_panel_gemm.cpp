#include "tensorpar/kernels/bf16_panel_gemm.hpp"

#include <omp.h>

#include <algorithm>
#include <array>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/bf16_tile_kernel.hpp"

namespace tensorpar::detail {
namespace {

// Rows of A per block: the block's rows (24 x k pairs) stay in L1/L2 while every panel of B passes
// under them. 24 to 240 measured within 2% on gpt-bench's shapes; 24 was the best.
constexpr int64_t kRowBlock = 24;

// 16 pairs (row0[j], row1[j]) for j in [0, 16) masked by `mask` (masked-off columns are 0); a null row1
// gives a zero upper half.
TP_BF16_TARGET __m512i interleave16(const bf16* row0, const bf16* row1, __mmask16 mask) {
  const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row0));
  if (!row1) return lo;
  const __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, row1));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// Pair row p of src (rows 2p, 2p+1; k rows in all), columns [0, width) with width rounded up to 16
// and the columns past n written as 0.
TP_BF16_TARGET void interleave_pair_row(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n, int64_t p,
                                        int64_t j0, int64_t width) {
  const bf16* r0 = src + 2 * p * ld;
  const bf16* r1 = 2 * p + 1 < k ? r0 + ld : nullptr;
  for (int64_t j = 0; j < width; j += 16)
    _mm512_storeu_si512(dst + j, interleave16(r0 + j0 + j, r1 ? r1 + j0 + j : nullptr, first_n(n - j0 - j)));
}

// The packers below are the bodies of OpenMP loops that sit in plain functions (bf16_pack_*): clang
// outlines a parallel region into a function without the target attribute, where AVX-512 values are
// an error unless the whole build targets AVX-512.

// Pair row p of every panel.
TP_BF16_TARGET void pack_panels_row(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n, int64_t p) {
  const int64_t kp = (k + 1) / 2, panels = (n + kPanelColumns - 1) / kPanelColumns;
  for (int64_t q = 0; q < panels; ++q)
    interleave_pair_row(dst + (q * kp + p) * kPanelColumns, src, ld, k, n, p, q * kPanelColumns, kPanelColumns);
}

// Pair row p.
TP_BF16_TARGET void pack_pairs_row(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t m, int64_t p) {
  const int64_t whole = m / 16 * 16;
  uint32_t* d = dst + p * m;
  interleave_pair_row(d, src, ld, k, m, p, 0, whole);
  if (whole < m) {  // the last columns: a masked store, dst has exactly m pairs per row
    const bf16* r0 = src + 2 * p * ld;
    const __mmask16 mask = first_n(m - whole);
    _mm512_mask_storeu_epi32(d + whole, mask,
                             interleave16(r0 + whole, 2 * p + 1 < k ? r0 + ld + whole : nullptr, mask));
  }
}

// Blocks of 16 columns (rows of src) x 16 pairs, transposed in registers: column j's pairs are the
// 32-bit words of src row j.
// Columns [j0, j0 + 16) x pairs [q0, q0 + 16).
TP_BF16_TARGET void pack_panels_transposed_block(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n,
                                                 int64_t j0, int64_t q0) {
  const int64_t kp = (k + 1) / 2;
  const int64_t left = k - 2 * q0;  // bf16 values of each row in this block: 32 or fewer
  const __mmask32 mask = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
  __m512i r[16];
  for (int64_t i = 0; i < 16; ++i)
    r[i] = j0 + i < n ? _mm512_maskz_loadu_epi16(mask, src + (j0 + i) * ld + 2 * q0) : _mm512_setzero_si512();
  transpose16x16(r);
  uint32_t* panel = dst + j0 / kPanelColumns * kp * kPanelColumns + j0 % kPanelColumns;
  for (int64_t p = 0; p < std::min<int64_t>(16, kp - q0); ++p)
    _mm512_storeu_si512(panel + (q0 + p) * kPanelColumns, r[p]);
}

// Blocks of 16 rows x 32 columns of w, rounded into 16 registers of 16 pairs: interleaved two rows at
// a time for the backward packing, then transposed for the forward one.
// Rows [r0, r0 + 16) x columns [c0, c0 + 32) of w.
TP_BF16_TARGET void pack_weight_block(uint32_t* forward, uint32_t* backward, const float* w, int64_t rows,
                                      int64_t cols, int64_t r0, int64_t c0) {
  const int64_t col_pairs = cols / 2, row_pairs = rows / 2;
  // 16-bit lanes: pairs (a[i], b[i]) for i in [0, 16) and [16, 32); b is the second source (index + 32).
  alignas(64) static constexpr auto kIndex = [] {
    std::array<uint16_t, 64> idx{};
    for (int i = 0; i < 16; ++i) {
      idx[2 * i] = uint16_t(i), idx[2 * i + 1] = uint16_t(32 + i);
      idx[32 + 2 * i] = uint16_t(16 + i), idx[32 + 2 * i + 1] = uint16_t(48 + i);
    }
    return idx;
  }();
  const __m512i lo_idx = _mm512_load_si512(kIndex.data()), hi_idx = _mm512_load_si512(kIndex.data() + 32);
  const __mmask16 lo = first_n(cols - c0), hi = first_n(cols - c0 - 16);
  __m512i r[16];
  for (int64_t i = 0; i < 16; ++i) {
    if (r0 + i >= rows) {
      r[i] = _mm512_setzero_si512();
      continue;
    }
    const float* src = w + (r0 + i) * cols + c0;
    r[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src));
  }
  // backward: pair row (r0 + i) / 2, columns [c0, c0 + 32) of panel c0 / 64
  uint32_t* back = backward + c0 / kPanelColumns * row_pairs * kPanelColumns + c0 % kPanelColumns;
  for (int64_t i = 0; i < 16 && r0 + i < rows; i += 2) {
    uint32_t* d = back + (r0 + i) / 2 * kPanelColumns;
    _mm512_storeu_si512(d, _mm512_permutex2var_epi16(r[i], lo_idx, r[i + 1]));
    _mm512_storeu_si512(d + 16, _mm512_permutex2var_epi16(r[i], hi_idx, r[i + 1]));
  }
  // forward: pair rows [c0 / 2, c0 / 2 + 16), columns [r0, r0 + 16) of panel r0 / 64
  if (c0 >= cols) return;
  transpose16x16(r);
  uint32_t* fwd = forward + r0 / kPanelColumns * col_pairs * kPanelColumns + r0 % kPanelColumns;
  for (int64_t p = 0; p < std::min<int64_t>(16, col_pairs - c0 / 2); ++p)
    _mm512_storeu_si512(fwd + (c0 / 2 + p) * kPanelColumns, r[p]);
}

// A's pairs: (row i, pair p) at a[i * row + p * pair].
struct PairsA {
  const uint32_t* a;
  int64_t row, pair;
};

// Rows [i0, i1) x panels [q0, q1) of C.
void gemm_range(int64_t i0, int64_t i1, int64_t q0, int64_t q1, int64_t n, int64_t kp, PairsA a, const uint32_t* b,
                const float* bias, float beta, float* c, int64_t ldc) {
  for (int64_t ib = i0; ib < i1; ib += kRowBlock) {
    const int64_t ie = std::min(ib + kRowBlock, i1);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t j0 = q * kPanelColumns, nj = std::min(kPanelColumns, n - j0), nv = (nj + 15) / 16;
      const TileFn fn6 = kTiles[kMaxRows - 1][size_t(nv - 1)];
      const __mmask16 last = first_n(nj - 16 * (nv - 1));
      const uint32_t* panel = b + q * kp * kPanelColumns;
      const float* panel_bias = bias ? bias + j0 : nullptr;
      for (int64_t i = ib; i < ie; i += kMaxRows) {
        const int64_t mr = std::min<int64_t>(kMaxRows, ie - i);
        const TileFn fn = mr == kMaxRows ? fn6 : kTiles[size_t(mr - 1)][size_t(nv - 1)];
        fn(0, kp, 1.0f, a.a + i * a.row, a.row, a.pair, panel, kPanelColumns, beta, c + i * ldc + j0, ldc, last,
           panel_bias);
      }
    }
  }
}

// Panels per column block: B's block (ceil(k/2) x 64 pairs per panel) stays in L2 while every row
// block passes over it, so B is read from memory once, not once per row block (a 50k-vocabulary
// LM head's B is 39 MB).
constexpr int64_t kBBlockBytes = int64_t(1) << 20;

void gemm_blocks(int64_t i0, int64_t i1, int64_t q0, int64_t q1, int64_t n, int64_t kp, PairsA a, const uint32_t* b,
                 const float* bias, float beta, float* c, int64_t ldc) {
  const int64_t per_block = std::max<int64_t>(1, kBBlockBytes / std::max<int64_t>(1, kp * kPanelColumns * 4));
  for (int64_t q = q0; q < q1; q += per_block)
    gemm_range(i0, i1, q, std::min(q + per_block, q1), n, kp, a, b, bias, beta, c, ldc);
}

}  // namespace

int64_t bf16_panels_size(int64_t k, int64_t n) {
  return (n + kPanelColumns - 1) / kPanelColumns * kPanelColumns * ((k + 1) / 2);
}

void bf16_pack_panels(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n) {
  TP_CHECK(ld >= n, ShapeError, "bf16_pack_panels: ld={} is smaller than n={}", ld, n);
  const int64_t kp = (k + 1) / 2;
#pragma omp parallel for schedule(static) if (k * n >= kParallelMinElements)
  for (int64_t p = 0; p < kp; ++p) pack_panels_row(dst, src, ld, k, n, p);
}

void bf16_pack_panels_transposed(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n) {
  TP_CHECK(ld >= k, ShapeError, "bf16_pack_panels_transposed: ld={} is smaller than k={}", ld, k);
  const int64_t kp = (k + 1) / 2, n16 = (n + 15) / 16 * 16,
                padded = (n + kPanelColumns - 1) / kPanelColumns * kPanelColumns;
  const int64_t blocks_j = n16 / 16, blocks_p = (kp + 15) / 16;
#pragma omp parallel for schedule(static) if (k * n >= kParallelMinElements)
  for (int64_t block = 0; block < blocks_j * blocks_p; ++block)
    pack_panels_transposed_block(dst, src, ld, k, n, block / blocks_p * 16, block % blocks_p * 16);
  // Columns [n16, padded) of the last panel: 0.
  if (n16 < padded) {
    uint32_t* panel = dst + (padded / kPanelColumns - 1) * kp * kPanelColumns;
    for (int64_t p = 0; p < kp; ++p)
      std::fill(panel + p * kPanelColumns + n16 % kPanelColumns, panel + (p + 1) * kPanelColumns, 0u);
  }
}

void bf16_pack_pairs(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t m) {
  TP_CHECK(ld >= m, ShapeError, "bf16_pack_pairs: ld={} is smaller than m={}", ld, m);
  const int64_t kp = (k + 1) / 2;
#pragma omp parallel for schedule(static) if (k * m >= kParallelMinElements)
  for (int64_t p = 0; p < kp; ++p) pack_pairs_row(dst, src, ld, k, m, p);
}

void bf16_pack_weight_panels(uint32_t* forward, uint32_t* backward, const float* w, int64_t rows, int64_t cols) {
  TP_CHECK(rows % 2 == 0 && cols % 2 == 0, ShapeError,
           "bf16_pack_weight_panels: rows={} and cols={} must be even", rows, cols);
  const int64_t padded_rows = (rows + kPanelColumns - 1) / kPanelColumns * kPanelColumns;
  const int64_t padded_cols = (cols + kPanelColumns - 1) / kPanelColumns * kPanelColumns;
  const int64_t blocks_r = padded_rows / 16, blocks_c = padded_cols / 32;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinElements)
  for (int64_t block = 0; block < blocks_r * blocks_c; ++block)
    pack_weight_block(forward, backward, w, rows, cols, block / blocks_c * 16, block % blocks_c * 32);
}

// Threads take whole panels (each reads only its part of B); with fewer panels than threads they
// take row ranges instead (whole tiles of 6).
void bf16_panel_gemm(int64_t m, int64_t n, int64_t k, const uint32_t* a, int64_t a_row, int64_t a_pair,
                     const uint32_t* b_panels, const float* bias, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  const PairsA pairs{a, a_row, a_pair};
  const int64_t kp = (k + 1) / 2, panels = (n + kPanelColumns - 1) / kPanelColumns;
#pragma omp parallel if (omp_get_max_threads() > 1 && m * n * kp >= kParallelMinElements * 64)
  {
    const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    if (panels >= threads) {
      gemm_blocks(0, m, panels * id / threads, panels * (id + 1) / threads, n, kp, pairs, b_panels, bias, beta, c,
                  ldc);
    } else {
      const int64_t tiles = (m + kMaxRows - 1) / kMaxRows;
      gemm_blocks(std::min(m, tiles * id / threads * kMaxRows), std::min(m, tiles * (id + 1) / threads * kMaxRows), 0,
                  panels, n, kp, pairs, b_panels, bias, beta, c, ldc);
    }
  }
}

}  // namespace tensorpar::detail
