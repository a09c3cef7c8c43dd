#include "tensorpar/parallel/vocab_parallel_cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace tensorpar {

namespace {
// Real (non-padding) columns of this shard.
int64_t real_columns(const VocabShard& s) {
  return std::clamp<int64_t>(s.vocab_size - s.start, 0, s.local_size);
}
}  // namespace

float vocab_parallel_cross_entropy_forward(ProcessGroup& tp, float* losses, float* row_max, float* row_sumexp,
                                           const float* logits, const int32_t* targets, int64_t N,
                                           const VocabShard& shard) {
  const int64_t V = shard.local_size, real = real_columns(shard);
  for (int64_t n = 0; n < N; ++n) {
    TP_CHECK(targets[n] >= 0 && targets[n] < shard.vocab_size, ShapeError,
             "target token {} at position {} is outside the vocabulary [0, {})", targets[n], n, shard.vocab_size);
    const float* row = logits + n * V;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t v = 0; v < real; ++v) m = std::max(m, row[v]);
    row_max[n] = m;
  }
  // f32 whatever --tp-comm-dtype says: the statistics are N floats, and the loss and its gradient
  // exp(x - max) / sum depend on them directly (a 2^-8 error in the sum is 0.004 in every loss)
  tp.all_reduce(std::span<float>(row_max, size_t(N)), {ReduceOp::Max});

  // [sum of exponentials | target logit] reduced together in one message
  thread_local std::vector<float> sums;
  sums.assign(size_t(2 * N), 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    const float m = row_max[n];
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t v = 0; v < real; ++v) s += std::exp(row[v] - m);
    sums[size_t(n)] = s;
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) sums[size_t(N + n)] = row[t];
  }
  tp.all_reduce(std::span<float>(sums));

  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    row_sumexp[n] = sums[size_t(n)];
    losses[n] = std::log(sums[size_t(n)]) + row_max[n] - sums[size_t(N + n)];
    total += losses[n];
  }
  return N > 0 ? float(total / double(N)) : 0.0f;
}

void vocab_parallel_cross_entropy_backward(float* dlogits, const float* logits, const float* row_max,
                                           const float* row_sumexp, const int32_t* targets, int64_t N,
                                           const VocabShard& shard, float dloss) {
  const int64_t V = shard.local_size, real = real_columns(shard);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits + n * V;
    float* drow = dlogits + n * V;
    const float m = row_max[n], scale = dloss / row_sumexp[n];
#pragma omp simd
    for (int64_t v = 0; v < real; ++v) drow[v] = std::exp(row[v] - m) * scale;
    for (int64_t v = real; v < V; ++v) drow[v] = 0.0f;
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) drow[t] -= dloss;
  }
}

}  // namespace tensorpar
