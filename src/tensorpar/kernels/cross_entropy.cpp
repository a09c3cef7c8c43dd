#include "tensorpar/kernels/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/kernels/vec_math.hpp"

namespace tensorpar {
namespace {

void check_args(const int32_t* targets, int64_t N, int64_t V, int64_t ld, const char* who) {
  TP_CHECK(N >= 0 && V > 0 && ld >= V, ShapeError, "{}: need N >= 0, V > 0 and ld >= V; got N={} V={} ld={}", who, N,
           V, ld);
  for (int64_t n = 0; n < N; ++n)
    TP_CHECK(targets[n] >= 0 && targets[n] < V, ShapeError,
             "{}: target {} of row {} is outside the vocabulary [0, {}); check the tokenizer/vocab size", who,
             targets[n], n, V);
}

// log(sum_j exp(x_j)) over x (V), max-shifted.
inline float logsumexp(const float* x, int64_t V) {
  float m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < V; ++j) m = x[j] > m ? x[j] : m;
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < V; ++j) s += detail::exp_approx(x[j] - m);
  return m + std::log(s);
}

}  // namespace

float cross_entropy_forward(float* losses, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V) {
  check_args(targets, N, V, ld, "cross_entropy_forward");
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (N * V >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * ld;
    losses[n] = logsumexp(x, V) - x[targets[n]];
    total += losses[n];
  }
  return N > 0 ? float(total / double(N)) : 0.0f;
}

void cross_entropy_backward(float* dlogits, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V, float dloss) {
  check_args(targets, N, V, ld, "cross_entropy_backward");
#pragma omp parallel for schedule(static) if (N * V >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * ld;
    float* dx = dlogits + n * ld;
    const int64_t t = targets[n];
    const float lse = logsumexp(x, V);
    const float xt = x[t];  // read before the row is overwritten (dlogits may alias logits)
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) dx[j] = detail::exp_approx(x[j] - lse) * dloss;
    dx[t] = (detail::exp_approx(xt - lse) - 1.0f) * dloss;
    for (int64_t j = V; j < ld; ++j) dx[j] = 0.0f;
  }
}

// Rows are independent: threads split them once a call has enough work to pay for the fork
// (a gpt2-small LM head: 4096 x 25152 per rank; gpt-bench's 2048 x 128 stays serial).
void softmax_row_max(float* row_max, const float* logits, int64_t ld, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static) if (N * V >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * ld;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < V; ++j) m = x[j] > m ? x[j] : m;
    row_max[n] = m;
  }
}

void softmax_row_sumexp(float* row_sumexp, const float* logits, int64_t ld, const float* row_max, int64_t N,
                        int64_t V) {
#pragma omp parallel for schedule(static) if (N * V >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * ld;
    const float m = row_max[n];
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; ++j) s += detail::exp_approx(x[j] - m);
    row_sumexp[n] = s;
  }
}

void softmax_scaled(float* out, const float* logits, int64_t ld, const float* row_max, const float* row_sumexp,
                    int64_t N, int64_t V, float scale) {
#pragma omp parallel for schedule(static) if (N * V >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * ld;
    float* y = out + n * ld;
    const float m = row_max[n], k = scale / row_sumexp[n];
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) y[j] = detail::exp_approx(x[j] - m) * k;
    for (int64_t j = V; j < ld; ++j) y[j] = 0.0f;
  }
}

void softmax_scaled_minus_target_bf16(bf16* out, const float* logits, int64_t ld, const float* row_max,
                                      const float* row_sumexp, const int32_t* targets, int64_t target_offset,
                                      int64_t N, int64_t V, float scale) {
  constexpr int64_t kTile = 4096;  // f32 values: computed, corrected at the target and rounded in L1
  const int64_t pieces = (ld + kTile - 1) / kTile;
#pragma omp parallel for collapse(2) schedule(static) if (N * ld >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < pieces; ++p) {
      alignas(64) float tile[kTile];
      const int64_t c0 = p * kTile, len = std::min(kTile, ld - c0), real = std::clamp<int64_t>(V - c0, 0, len);
      const float* x = logits + n * ld + c0;
      const float m = row_max[n], k = scale / row_sumexp[n];
#pragma omp simd
      for (int64_t j = 0; j < real; ++j) tile[j] = detail::exp_approx(x[j] - m) * k;
      for (int64_t j = real; j < len; ++j) tile[j] = 0.0f;
      const int64_t t = int64_t(targets[n]) - target_offset - c0;
      if (t >= 0 && t < real) tile[t] -= scale;
      convert_f32_to_bf16(out + n * ld + c0, tile, len);
    }
}

}  // namespace tensorpar
