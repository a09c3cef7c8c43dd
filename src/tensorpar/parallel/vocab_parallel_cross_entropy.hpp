// Vocabulary-parallel cross-entropy (Megatron's _VocabParallelCrossEntropy). Each rank holds the
// logits of its vocabulary columns only, [N, V/t]; the loss needs three reductions over the group
// (row max, sum of exponentials, target logit) and never gathers the full logits. Backward is local:
// softmax - onehot on this rank's columns. Padded vocabulary columns (global index >= vocab_size)
// are excluded from the softmax. The per-row work is the vectorised, threaded softmax pieces of
// kernels/cross_entropy.hpp (at gpt2-small's 4096 x 25152 logits per rank: 85 ms a step instead of
// 760 ms with scalar std::exp).
#pragma once
#include <cstdint>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

struct VocabShard {
  int64_t start = 0;       // first global vocabulary column held here
  int64_t local_size = 0;  // columns held here (including padding)
  int64_t vocab_size = 0;  // real vocabulary: global columns >= this are padding
};

// losses (N) = logsumexp_v logits[n, v] - logits[n, target_n] over the whole real vocabulary.
// logits (N, shard.local_size) this rank's columns; targets (N) in [0, vocab_size).
// row_max (N), row_sumexp (N) are written for the backward. Returns the mean loss. Two all-reduces.
float vocab_parallel_cross_entropy_forward(ProcessGroup& tp, float* losses, float* row_max, float* row_sumexp,
                                           const float* logits, const int32_t* targets, int64_t N,
                                           const VocabShard& shard);

// dlogits (N, local_size) = (softmax - onehot(target)) * dloss, padding columns 0. May alias logits.
void vocab_parallel_cross_entropy_backward(float* dlogits, const float* logits, const float* row_max,
                                           const float* row_sumexp, const int32_t* targets, int64_t N,
                                           const VocabShard& shard, float dloss);

}  // namespace tensorpar
