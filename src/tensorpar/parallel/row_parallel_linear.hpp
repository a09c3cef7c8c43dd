// RowParallelLinear: Y = X A^T + b with A [out, in] split by input columns across the group. X
// arrives split (X_i, the output of a column-parallel layer), rank i computes the partial sum
// X_i A_i^T, the forward all-reduces the partial sums (Megatron's g operator) and then adds the bias
// once. Backward needs no communication: dX_i = dY A_i.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/kernels/matmul.hpp"
#include "tensorpar/kernels/quantized_matmul.hpp"
#include "tensorpar/parallel/parameter.hpp"
#include "tensorpar/parallel/sequence_parallel.hpp"

namespace tensorpar {

struct RowParallelOptions {
  std::string name;
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;
  bool input_is_parallel = true;  // false: X is whole on every rank and each rank reads its columns
  uint64_t seed = 0;
  float init_std = 0.02f;
  Precision precision = Precision::F32;  // of the GEMMs; parameters and gradients are always f32
  // Training: weight and gradient; Inference: the weight only, zero until loaded (no gradient, no
  // initialisation); Deferred: no f32 weight, the loader installs a quantized one (install_quantized).
  // The bias, if any, is Inference whenever this is not Training.
  ParameterAlloc alloc = ParameterAlloc::Training;
  // Sequence parallel when set: the output is reduce-scattered to this rank's N/t tokens, and
  // dout is those tokens' gradient, all-gathered here.
  SequenceParallelWorkspace* workspace = nullptr;
  bool sequence_parallel = false;
};

class RowParallelLinear {
 public:
  // share_with: keep the bf16 input copy and the bf16 gradient scratch in that layer's buffers
  // (built alike) instead of allocating them (activation recomputation; see keep_input).
  RowParallelLinear(ProcessGroup& tp, const RowParallelOptions& options, int64_t max_tokens,
                    const RowParallelLinear* share_with = nullptr);

  int64_t in_features() const { return options_.in_features; }
  int64_t out_features() const { return options_.out_features; }
  int64_t in_features_per_partition() const { return in_per_partition_; }

  bool sequence_parallel() const { return options_.sequence_parallel && tp_.size() > 1; }

  // out (N, out) = all-reduce(X_i A_i^T) + b; inp (N, in_pp), or (N, in) when !input_is_parallel.
  // Sequence parallel: out is this rank's (N/t, out) tokens of the reduce-scattered sum, dout likewise.
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, in_pp) written (or (N, in) all-gathered when !input_is_parallel); weight.grad (out, in_pp)
  // += dout^T X_i; bias.grad += column sums of dout (identical on every rank: dout is).
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  Parameter weight;  // local (out, in_pp)
  Parameter bias;    // replicated (out)

  void collect_parameters(std::vector<Parameter*>& out);
  // Inference only: replace this rank's f32 weight slice (out, in_pp) by its blockwise-quantized
  // copy and free the f32 weight and its gradient. Blocks never straddle the split: ShapeError unless
  // in_features_per_partition is a multiple of 32.
  void quantize(WeightFormat format);
  // The ShapeError quantize(format) would throw, without quantizing (checked before loading).
  void check_quantizable(WeightFormat format) const;
  const QuantizedWeight& quantized_weight() const { return qweight_; }
  // Inference with quantized weights loaded tensor by tensor: take `q`, this rank's (rows, cols)
  // slice already quantized, as the weight (ShapeError if its shape is not this rank's slice).
  void install_quantized(QuantizedWeight q);

  // bf16 mode: round inp into the bf16 copy the backward reads, as forward does, without the GEMM
  // and its all-reduce: after the input was recomputed into a buffer shared by several layers.
  // f32: nothing to do (backward reads inp itself).
  void keep_input(const float* inp, int64_t N);
  // bf16 mode: the (max_tokens, in_pp) bf16 copy of the input that forward rounds inp into and backward
  // reads. A producer that writes bf16 itself (a fused activation, kernels/activations_bf16.hpp) fills
  // its first N rows and calls forward_kept_input(out, N) instead of forward(out, inp, N): same result,
  // one pass over the activation fewer. Needs input_is_parallel (the input is this rank's columns).
  bf16* kept_input_bf16();
  void forward_kept_input(float* out, int64_t N);
  // Bytes kept from forward to backward that this layer owns: the bf16 input copy (bf16 only).
  int64_t activation_bytes() const { return x_bf16_.owned_bytes(); }

 private:
  // forward after the input is in x_bf16_ (bf16) or x (f32, row stride ld_x)
  void forward_gemm(float* out, const float* x, int64_t ld_x, const bf16* xb, int64_t N);
  ProcessGroup& tp_;
  RowParallelOptions options_;
  int64_t in_per_partition_ = 0;
  int64_t max_tokens_ = 0;
  Tensor dinp_local_, gather_scratch_;  // only when !input_is_parallel
  Bf16Operand x_bf16_, dy_bf16_;  // bf16 mode, as in ColumnParallelLinear
  Bf16Weight w_bf16_;
  QuantizedWeight qweight_;  // inference with quantized weights; empty otherwise
};

}  // namespace tensorpar
