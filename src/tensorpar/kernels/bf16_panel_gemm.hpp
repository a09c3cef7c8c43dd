// The linear layers' bf16 GEMMs (forward Y = X W^T, dX = dY W, dW += dY^T X) on the register tile of
// bf16_tile_kernel.hpp, with B packed in panels of 64 columns. Hand-written because, measured on
// gpt-bench's shapes (one thread, Zen 5), oneDNN's brgemm kernels reach 86-92% of the bf16 peak and this
// loop 93-95%: the tile's loop runs at ~98% with its operands in L1, a panel of B (k x 64) stays in L2
// while the row tiles stream A, and each C tile is written once (no blocking of k, so C never makes a
// second trip through memory). The result of each output does not depend on the thread count.
// Internal to kernels/: every function here needs AVX512-BF16 (bf16_tile_gemm_supported()), which
// gemm_bf16.cpp checks before it calls them.
#pragma once
#include <cstdint>

#include "tensorpar/core/bf16.hpp"

namespace tensorpar::detail {

inline constexpr int64_t kPanelColumns = 64;

// uint32 values of B (k x n) packed in panels: panel q holds columns [64q, 64q + 64) as ceil(k/2)
// rows of 64 pairs, pair (p, j) at dst[q * ceil(k/2) * 64 + p * 64 + j % 64]. Columns past n are 0.
int64_t bf16_panels_size(int64_t k, int64_t n);

// B = src (k x n, row-major bf16, row stride ld): pair (p, j) = (src[2p][j], src[2p+1][j]).
void bf16_pack_panels(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n);

// B = src^T, src (n x k, row-major bf16, row stride ld): pair (p, j) = (src[j][2p], src[j][2p+1]).
void bf16_pack_panels_transposed(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t n);

// A = src^T for a weight gradient, src (k x m, row-major bf16, row stride ld): pair (p, i) =
// (src[2p][i], src[2p+1][i]) at dst[p * m + i], read with a_row = 1, a_pair = m.
void bf16_pack_pairs(uint32_t* dst, const bf16* src, int64_t ld, int64_t k, int64_t m);

// In all three, an odd k gets a zero upper half in its last pair.

// Both packings of a linear layer's weight w (rows x cols, row-major f32, both even), rounded to bf16
// (vcvtne2ps2bf16, as convert_f32_to_bf16) in one pass over w: `forward` = bf16_pack_panels_transposed
// of it (B = w^T: k = cols, n = rows) and `backward` = bf16_pack_panels of it (B = w: k = rows, n =
// cols), the same words as rounding first and packing each from the bf16 copy.
void bf16_pack_weight_panels(uint32_t* forward, uint32_t* backward, const float* w, int64_t rows, int64_t cols);

// C (m x n f32, row stride ldc) = A B (+ bias[j], if bias) + beta * C (beta == 0 never reads C).
// A (m x k) in pairs as in bf16_tile_gemm.hpp (a row-major bf16 matrix with an even row stride lda:
// a_row = lda / 2, a_pair = 1); B packed by the functions above. Runs on the calling thread's OpenMP
// threads, each computing whole outputs in one fixed order, so results are bit-identical for any
// thread count. Needs AVX512-BF16 (bf16_tile_gemm_supported()).
void bf16_panel_gemm(int64_t m, int64_t n, int64_t k, const uint32_t* a, int64_t a_row, int64_t a_pair,
                     const uint32_t* b_panels, const float* bias, float beta, float* c, int64_t ldc);

}  // namespace tensorpar::detail
