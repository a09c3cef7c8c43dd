#include "tensorpar/kernels/activations_bf16.hpp"

#include <omp.h>

#include <algorithm>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/activation_math.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"

namespace tensorpar {
namespace {

// f32 values per tile: 16 KiB, computed and rounded while in L1; threads take whole tiles.
constexpr int64_t kTile = 4096;

}  // namespace

void gelu_forward_bf16(bf16* out, const float* inp, int64_t n) {
  TP_CHECK(n >= 0, ShapeError, "gelu_forward_bf16: n={} is negative", n);
  const int64_t tiles = (n + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (n >= kParallelMinElements)
  for (int64_t t = 0; t < tiles; ++t) {
    alignas(64) float tile[kTile];
    const int64_t i0 = t * kTile, len = std::min(kTile, n - i0);
    const float* x = inp + i0;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) tile[i] = detail::gelu(x[i]);
    convert_f32_to_bf16(out + i0, tile, len);
  }
}

void swiglu_forward_bf16(bf16* out, const float* gate, const float* up, int64_t N, int64_t C, int64_t ld_in) {
  TP_CHECK(N >= 0 && C >= 0 && ld_in >= C, ShapeError, "swiglu_forward_bf16: need N, C >= 0, ld_in >= C; got {} {} {}",
           N, C, ld_in);
  const int64_t pieces = (C + kTile - 1) / kTile;  // of one row
#pragma omp parallel for collapse(2) schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t r = 0; r < N; ++r)
    for (int64_t p = 0; p < pieces; ++p) {
      alignas(64) float tile[kTile];
      const int64_t c0 = p * kTile, len = std::min(kTile, C - c0);
      const float* g = gate + r * ld_in + c0;
      const float* u = up + r * ld_in + c0;
#pragma omp simd
      for (int64_t c = 0; c < len; ++c) tile[c] = detail::swiglu(g[c], u[c]);
      convert_f32_to_bf16(out + r * C + c0, tile, len);
    }
}

void gelu_backward_bf16(bf16* dinp, float* dbias, const float* dout, const float* inp, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "gelu_backward_bf16: sizes must be non-negative, got N={} C={}", N, C);
  // Threads own contiguous column blocks (one per thread; one thread sweeps whole rows, as the
  // prefetchers like), each summing its columns of dbias over the rows in order: the same additions
  // in the same order as bias_backward, whatever the thread count.
  const bool parallel = N * C >= kParallelMinElements && omp_get_max_threads() > 1;
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  const int64_t width = (C / threads + 15) / 16 * 16, blocks = width > 0 ? (C + width - 1) / width : 0;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < blocks; ++b) {
    alignas(64) float tile[kTile];
    const int64_t block_end = std::min(C, (b + 1) * width);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t c0 = b * width; c0 < block_end; c0 += kTile) {
        const int64_t len = std::min(kTile, block_end - c0), off = r * C + c0;
        const float* d = dout + off;
        const float* x = inp + off;
#pragma omp simd
        for (int64_t c = 0; c < len; ++c) tile[c] = d[c] * detail::gelu_grad(x[c]);
        convert_f32_to_bf16(dinp + off, tile, len);
        if (dbias) {
          float* db = dbias + c0;
#pragma omp simd
          for (int64_t c = 0; c < len; ++c) db[c] += tile[c];
        }
      }
  }
}

}  // namespace tensorpar
