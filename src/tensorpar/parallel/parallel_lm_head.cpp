#include "tensorpar/parallel/parallel_lm_head.hpp"

#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/parallel/mappings.hpp"
#include "tensorpar/parallel/vocab_parallel_cross_entropy_bf16.hpp"

namespace tensorpar {

ParallelLmHead::ParallelLmHead(ProcessGroup& tp, Parameter& weight, VocabShard shard, int64_t max_tokens,
                               Precision precision, SequenceParallelWorkspace* workspace, bool inference)
    : tp_(tp),
      weight_(weight),
      shard_(shard),
      hidden_(weight.local_shape()[1]),
      max_tokens_(max_tokens),
      precision_(precision),
      workspace_(workspace) {
  if (precision == Precision::BF16 && !weight.value.empty()) {
    x_bf16_ = Bf16Operand(max_tokens, hidden_);
    w_bf16_ = Bf16Operand(shard.local_size, hidden_);
    dlogits_bf16_ = Bf16Operand(max_tokens, shard.local_size);
  }
  const int64_t rows = weight.local_shape()[0];
  TP_CHECK_EQ(rows, shard.local_size, "LM head rows");
  if (inference) return;
  logits_ = Tensor({max_tokens, shard.local_size});
  row_max_ = Tensor({max_tokens});
  row_sumexp_ = Tensor({max_tokens});
}

void ParallelLmHead::logits(float* out, const float* x, int64_t N) {
  // (N, V_local) = x (N, h) · W_i^T, W_i (V_local, h)
  if (!qweight_.empty()) {
    quantized_matmul(out, x, hidden_, qweight_, N);
    return;
  }
  if (precision_ == Precision::BF16 && N <= max_tokens_) {
    const bf16* xb = x_bf16_.load(x, N, hidden_, hidden_);
    const bf16* wb = w_bf16_.load(weight_.value.f32(), shard_.local_size, hidden_, hidden_);
    gemm_bf16(Trans::No, Trans::Yes, N, shard_.local_size, hidden_, 1.0f, xb, hidden_, wb, hidden_, 0.0f, out,
              shard_.local_size);
    return;
  }
  gemm(Trans::No, Trans::Yes, N, shard_.local_size, hidden_, 1.0f, x, hidden_, weight_.value.f32(), hidden_, 0.0f,
       out, shard_.local_size);
}

float ParallelLmHead::forward(float* losses, const float* x, const int32_t* targets, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "LM head: {} tokens exceed the {} it was sized for", N, max_tokens_);
  if (sequence_parallel()) {  // all tokens enter the vocabulary-parallel region
    float* full = workspace_->gathered.f32();
    sequence_all_gather(tp_, full, x, N, hidden_);
    x = full;
  }
  if (logits_.empty()) {  // inference: first loss evaluation (eval)
    logits_ = Tensor({max_tokens_, shard_.local_size});
    row_max_ = Tensor({max_tokens_});
    row_sumexp_ = Tensor({max_tokens_});
  }
  logits(logits_.f32(), x, N);
  return vocab_parallel_cross_entropy_forward(tp_, losses, row_max_.f32(), row_sumexp_.f32(), logits_.f32(), targets,
                                              N, shard_);
}

void ParallelLmHead::quantize(WeightFormat format, bool free_f32) {
  if (format == WeightFormat::F32) return;
  TP_CHECK(qweight_.empty(), ConfigError, "LM head: the weight is already quantized");
  qweight_ = quantize_weight(format, weight_.value.f32(), shard_.local_size, hidden_);
  w_bf16_ = Bf16Operand();
  if (free_f32) {
    weight_.value = Tensor();
    weight_.grad = Tensor();
  }
}

void ParallelLmHead::install_quantized(QuantizedWeight q) {
  TP_CHECK(q.rows == shard_.local_size && q.cols == hidden_, ShapeError,
           "LM head: a quantized table of {} x {} for a slice of {} x {}", q.rows, q.cols, shard_.local_size, hidden_);
  qweight_ = std::move(q);
  w_bf16_ = Bf16Operand();
  weight_.value = Tensor();
  weight_.grad = Tensor();
}

void ParallelLmHead::backward(float* dx, const float* x, const int32_t* targets, int64_t N, float dloss) {
  TP_CHECK(qweight_.empty(), ConfigError, "LM head: quantized weights are for inference; backward needs f32 weights");
  float* dlogits = logits_.f32();  // in place: the logits are not needed after this
  if (precision_ == Precision::BF16)  // the loss writes the bf16 operand of the two GEMMs below directly (the f32 dlogits are not needed)
    vocab_parallel_cross_entropy_backward_bf16(dlogits_bf16_.data(), logits_.f32(), row_max_.f32(), row_sumexp_.f32(),
                                               targets, N, shard_, dloss);
  else
    vocab_parallel_cross_entropy_backward(dlogits, dlogits, row_max_.f32(), row_sumexp_.f32(), targets, N, shard_,
                                          dloss);
  const int64_t V = shard_.local_size;
  float* const dx_out = dx;
  if (sequence_parallel()) {  // gather the input again; collect every token's partial dx to reduce-scatter
    float* full = workspace_->gathered.f32();
    sequence_all_gather(tp_, full, x, N, hidden_);
    x = full;
    dx = workspace_->partial.f32();
    if (precision_ == Precision::BF16) x_bf16_.load(x, N, hidden_, hidden_);
  }
  // partial dx (N, h) = dlogits (N, V) · W_i (V, h), summed over the group;
  // while it travels: dW_i (V, h) += dlogits^T (V, N) · x (N, h)
  Work reduce;
  if (precision_ == Precision::BF16) {
    const bf16* db = dlogits_bf16_.data();
    gemm_bf16(Trans::No, Trans::No, N, hidden_, V, 1.0f, db, V, w_bf16_.data(), hidden_, 0.0f, dx, hidden_);
    if (!sequence_parallel()) reduce = copy_to_tp_backward_async(tp_, std::span<float>(dx, size_t(N * hidden_)));
    weight_grad_bf16(V, hidden_, N, db, x_bf16_.data(), weight_.grad.f32());
  } else {
    gemm(Trans::No, Trans::No, N, hidden_, V, 1.0f, dlogits, V, weight_.value.f32(), hidden_, 0.0f, dx, hidden_);
    if (!sequence_parallel()) reduce = copy_to_tp_backward_async(tp_, std::span<float>(dx, size_t(N * hidden_)));
    gemm(Trans::Yes, Trans::No, V, hidden_, N, 1.0f, dlogits, V, x, hidden_, 1.0f, weight_.grad.f32(), hidden_);
  }
  if (sequence_parallel())
    sequence_reduce_scatter(tp_, dx_out, dx, N, hidden_);
  else
    reduce.wait();
}

}  // namespace tensorpar
