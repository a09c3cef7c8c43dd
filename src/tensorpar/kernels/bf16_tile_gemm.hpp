// Small bf16 GEMMs for attention's blocks (64 x 256 x 64 and the like), hand-written on AVX512-BF16
// because a oneDNN call per block costs more than the block (and oneDNN would repack both operands on
// every call). The operands arrive already in the pair layout vdpbf16ps reads, written by the kernel
// that produced them (softmax writes P, the backward writes dS), so nothing is repacked here.
// Internal to kernels/: not part of the public API.
//
// vdpbf16ps multiplies pairs of bf16 along the reduction dimension, so both operands are addressed in
// 32-bit units that each hold two consecutive-k values (the lower half is the even k):
//   A (m x k): the pair (row i, pair p) is at a[i * a_row + p * a_pair]   (pairs p = 0 .. ceil(k/2)-1)
//     row-major bf16 with an even leading dimension lda: a_row = lda / 2, a_pair = 1;
//     the transpose of a VNNI-packed matrix (see B): a_row = 1, a_pair = its ldb.
//   B (k x n), "VNNI" packed: the pair (pair p, column j) is at b[p * ldb + j]; ldb >= n rounded up to
//     16 and the padding columns readable (their values are never stored).
// Odd k: the last pair's upper half must be 0 in A or B (and neither may hold NaN/Inf there).
#pragma once
#include <cstdint>

namespace tensorpar::detail {

// The causal triangle of an attention block, which the GEMM may skip. Skipping is exact: it drops only
// products with a factor known to be 0, or outputs no one reads. Row i of C / A, with `offset`:
//   OutputsFrom: C(i, j) for j >= i + offset are not needed (left as they were or written, unspecified);
//   ZeroKFrom:   A(i, k) = 0 for k >= i + offset (P and dS rows past the diagonal);
//   ZeroKBefore: A(i, k) = 0 for k < i + offset (P^T and dS^T rows: a key sees no earlier query).
// Only whole 16-column vectors, 6-row tiles and k pairs are skipped, so the zeros must be stored.
struct CausalSkip {
  enum class Kind { None, OutputsFrom, ZeroKFrom, ZeroKBefore };
  Kind kind = Kind::None;
  int64_t offset = 0;
};

// C (m x n, f32, row stride ldc) = alpha * A B + beta * C; beta == 0 never reads C.
void bf16_tile_gemm(int64_t m, int64_t n, int64_t k, float alpha, const uint32_t* a, int64_t a_row, int64_t a_pair,
                    const uint32_t* b, int64_t ldb, float beta, float* c, int64_t ldc, CausalSkip skip = {});

// Whether this CPU runs the kernels above (AVX512-BF16); callers take their f32 path otherwise.
bool bf16_tile_gemm_supported();

// Round-to-nearest-even bf16 of a row-major f32 matrix src (rows x cols, row stride lds), written in
// the layouts above (vcvtneps2bf16: denormals flush to zero, NaN stays NaN). Odd sizes get a zero
// upper half in their last pair; padding columns of a VNNI packing are written as 0.
//   bf16_pack_rows: A = src (k = cols): dst pair (i, p) at dst[i * ld_pairs + p], p < ceil(cols/2).
//   bf16_pack_vnni: B = src (k = rows, n = cols): dst pair (p, j) at dst[p * ld + j], j < ld.
//   bf16_pack_vnni_transposed: B = src^T (k = cols, n = rows): dst pair (p, j) = (src[j][2p],
//     src[j][2p+1]) at dst[p * ld + j], j < ld.
void bf16_pack_rows(uint32_t* dst, int64_t ld_pairs, const float* src, int64_t lds, int64_t rows, int64_t cols);
void bf16_pack_vnni(uint32_t* dst, int64_t ld, const float* src, int64_t lds, int64_t rows, int64_t cols);
void bf16_pack_vnni_transposed(uint32_t* dst, int64_t ld, const float* src, int64_t lds, int64_t rows,
                               int64_t cols);

}  // namespace tensorpar::detail
