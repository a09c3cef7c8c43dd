// GEMV for decode: y (M, N) = x (M, K) · W^T with W (N, K) row-major and M tiny (1..4 rows: batch-1
// and small-batch decode). At M = 1 the product is one pass over W, so its speed is how fast one
// thread streams W from memory; a general GEMM (oneDNN sgemm) spends part of that on packing and
// blocking made for large M (measured at ~60-70% of the single-thread streaming bandwidth here).
// This kernel reads W exactly once, row after row, i.e. as one sequential stream the hardware
// prefetcher follows, keeps x in L1 and accumulates each row in four (M = 1) or two (M > 1) AVX-512
// registers per x row (AVX2 + FMA registers on CPUs without AVX-512). OpenMP over contiguous ranges
// of rows when the process runs several threads.
#pragma once
#include <cstdint>

namespace tensorpar {

// Rows of x up to which gemv_f32 is used by gemm() (Trans::No, Trans::Yes, alpha 1, beta 0).
constexpr int64_t kGemvMaxRows = 4;

// y (M, N), row stride ldy = x (M, K), row stride ldx · W^T, W (N, K) row stride ldw; 1 <= M <= 4.
// AVX-512 where the CPU has it, else AVX2 + FMA, else gemv_f32_reference.
void gemv_f32(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t M, int64_t N,
              int64_t K);
// Plain loops, f64 accumulation: the reference the tests compare the vector kernels with.
void gemv_f32_reference(float* y, int64_t ldy, const float* x, int64_t ldx, const float* W, int64_t ldw, int64_t M,
                        int64_t N, int64_t K);
bool gemv_has_avx512();
bool gemv_has_avx2();  // AVX2 and FMA

}  // namespace tensorpar
