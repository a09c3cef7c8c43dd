#include "tensorpar/parallel/vocab_parallel_cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorpar/kernels/cross_entropy.hpp"

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
  for (int64_t n = 0; n < N; ++n)  // before anything is written or sent, identically on every rank
    TP_CHECK(targets[n] >= 0 && targets[n] < shard.vocab_size, ShapeError,
             "target token {} at position {} is outside the vocabulary [0, {})", targets[n], n, shard.vocab_size);
  softmax_row_max(row_max, logits, V, N, real);
  // f32 whatever --tp-comm-dtype says: the statistics are N floats, and the loss and its gradient
  // exp(x - max) / sum depend on them directly (a 2^-8 error in the sum is 0.004 in every loss)
  tp.all_reduce(std::span<float>(row_max, size_t(N)), {ReduceOp::Max});

  // [sum of exponentials | target logit] reduced together in one message
  thread_local std::vector<float> sums;
  sums.assign(size_t(2 * N), 0.0f);
  softmax_row_sumexp(sums.data(), logits, V, row_max, N, real);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) sums[size_t(N + n)] = logits[n * V + t];
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
  softmax_scaled(dlogits, logits, V, row_max, row_sumexp, N, real, dloss);  // padding columns 0
  for (int64_t n = 0; n < N; ++n) {
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) dlogits[n * V + t] -= dloss;
  }
}

}  // namespace tensorpar
