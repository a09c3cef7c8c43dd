#include "tensorpar/parallel/vocab_parallel_cross_entropy_bf16.hpp"

#include <algorithm>

#include "tensorpar/kernels/cross_entropy.hpp"

namespace tensorpar {

void vocab_parallel_cross_entropy_backward_bf16(bf16* dlogits, const float* logits, const float* row_max,
                                                const float* row_sumexp, const int32_t* targets, int64_t N,
                                                const VocabShard& shard, float dloss) {
  const int64_t V = shard.local_size, real = std::clamp<int64_t>(shard.vocab_size - shard.start, 0, V);
  softmax_scaled_minus_target_bf16(dlogits, logits, V, row_max, row_sumexp, targets, shard.start, N, real, dloss);
}

}  // namespace tensorpar
