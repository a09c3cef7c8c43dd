// ParallelLmHead: logits_i = x W_i^T with W the vocab-parallel embedding table (tied weights, as
// GPT-2) or an untied table of the same layout, followed by the vocab-parallel cross-entropy. The
// logits stay sharded [N, V/t]; dx is all-reduced (f backward) while dW is computed.
#pragma once
#include <cstdint>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/kernels/matmul.hpp"
#include "tensorpar/kernels/quantized_matmul.hpp"
#include "tensorpar/parallel/parameter.hpp"
#include "tensorpar/parallel/sequence_parallel.hpp"
#include "tensorpar/parallel/vocab_parallel_cross_entropy.hpp"

namespace tensorpar {

class ParallelLmHead {
 public:
  // `weight` is (V_padded / t, hidden) holding vocabulary rows [shard.start, shard.start + local_size).
  // With a workspace the head is sequence parallel: x and dx are this rank's (N/t, hidden) tokens.
  // The loss buffers (logits, row max and sum) are allocated here for training, on the first
  // forward() for inference (`inference`: generate and serve only ever call logits()).
  ParallelLmHead(ProcessGroup& tp, Parameter& weight, VocabShard shard, int64_t max_tokens,
                 Precision precision = Precision::F32, SequenceParallelWorkspace* workspace = nullptr,
                 bool inference = false);

  // logits (N, local_size) of this rank's vocabulary columns for x (N, hidden).
  void logits(float* out, const float* x, int64_t N);
  // Mean loss over N tokens; losses (N) per token. Keeps the logits for backward.
  float forward(float* losses, const float* x, const int32_t* targets, int64_t N);
  // dx (N, hidden) written, whole; weight.grad += dlogits^T x; each token's loss weighs dloss.
  void backward(float* dx, const float* x, const int32_t* targets, int64_t N, float dloss);

  // Inference only: logits from a blockwise-quantized copy of this rank's (V_local, hidden) table.
  // free_f32: also free the f32 table and its gradient (an untied head; a tied one is still the
  // embedding's table). Backward refuses afterwards.
  void quantize(WeightFormat format, bool free_f32);
  // Inference with the head loaded as a quantized copy: q is this rank's (local_size, hidden) table.
  void install_quantized(QuantizedWeight q);

  const VocabShard& shard() const { return shard_; }
  int64_t quantized_bytes() const { return qweight_.bytes(); }
  // Bytes kept from forward to backward: logits, row max and sum of exponentials, bf16 input copy.
  int64_t activation_bytes() const {
    return int64_t(logits_.nbytes() + row_max_.nbytes() + row_sumexp_.nbytes()) + x_bf16_.owned_bytes();
  }

 private:
  ProcessGroup& tp_;
  Parameter& weight_;
  VocabShard shard_;
  int64_t hidden_ = 0, max_tokens_ = 0;
  Tensor logits_;               // (max_tokens, local_size); becomes dlogits in backward
  Tensor row_max_, row_sumexp_;  // (max_tokens)
  Precision precision_;
  SequenceParallelWorkspace* workspace_;
  bool sequence_parallel() const { return workspace_ != nullptr && tp_.size() > 1; }
  Bf16Operand x_bf16_, w_bf16_, dlogits_bf16_;  // bf16 mode
  QuantizedWeight qweight_;                      // quantized inference; empty otherwise
};

}  // namespace tensorpar
