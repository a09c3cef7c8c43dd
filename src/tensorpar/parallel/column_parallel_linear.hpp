// ColumnParallelLinear: Y = X A^T + b with A [out, in] split by output rows across the group, so
// rank i computes Y_i = X A_i^T + b_i from the whole X. Backward: the partial dX of every rank is
// all-reduced (Megatron's f operator), overlapped with the weight-gradient GEMM.
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

struct ColumnParallelOptions {
  std::string name;                // parameter prefix: "<name>.weight", "<name>.bias"
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;
  bool gather_output = false;      // forward returns the whole Y (all-gather) instead of Y_i
  // The output dimension as a concatenation of parts each split over the group (fused QKV: [h, h, h]).
  // Empty: one part of out_features.
  std::vector<int64_t> segments;
  // Pieces each segment is split into (empty: the group size for all); fewer pieces than ranks
  // replicate each piece on consecutive ranks (see make_sharded). The caller then owns summing the
  // gradients of replicated pieces over the ranks that share them.
  std::vector<int> segment_parts;
  uint64_t seed = 0;
  float init_std = 0.02f;
  Precision precision = Precision::F32;  // of the GEMMs; parameters and gradients are always f32
  // Training: weight and gradient; Inference: the weight only, zero until loaded (no gradient, no
  // initialisation); Deferred: no f32 weight, the loader installs a quantized one (install_quantized).
  // The bias, if any, is Inference whenever this is not Training.
  ParameterAlloc alloc = ParameterAlloc::Training;
  // Sequence parallel when set: the input is this rank's N/t tokens, gathered here; dinp likewise.
  SequenceParallelWorkspace* workspace = nullptr;
  bool sequence_parallel = false;
};

class ColumnParallelLinear {
 public:
  // share_with: keep the bf16 input copy and the bf16 gradient scratch in that layer's buffers
  // (built alike) instead of allocating them (full activation recomputation).
  ColumnParallelLinear(ProcessGroup& tp, const ColumnParallelOptions& options, int64_t max_tokens,
                       const ColumnParallelLinear* share_with = nullptr);

  int64_t in_features() const { return options_.in_features; }
  int64_t out_features() const { return options_.out_features; }
  int64_t out_features_per_partition() const { return out_per_partition_; }

  bool sequence_parallel() const { return options_.sequence_parallel && tp_.size() > 1; }

  // out (N, out_per_partition), or (N, out_features) with gather_output; inp (N, in), or this
  // rank's (N/t, in) tokens when sequence parallel (then dinp is (N/t, in) too).
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, in) is written (not accumulated) with the group-summed input gradient;
  // weight.grad (out_pp, in) += dout_i^T inp; bias.grad (out_pp) += column sums of dout_i.
  // dout is (N, out_pp), or (N, out_features) with gather_output (this rank's columns are read in place).
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  // bf16 mode without gather_output: the (max_tokens, out_pp) buffer backward rounds dout into. A
  // producer that writes the output gradient in bf16 itself (a fused activation backward,
  // kernels/activations_bf16.hpp) fills its first N rows, adds the column sums of its f32 values to
  // bias.grad, and calls backward_kept_grad(dinp, inp, N) instead of backward(dinp, dout, inp, N).
  bf16* output_grad_bf16();
  void backward_kept_grad(float* dinp, const float* inp, int64_t N);

  Parameter weight;  // local (out_pp, in)
  Parameter bias;    // local (out_pp); empty tensor when options.bias is false

  void collect_parameters(std::vector<Parameter*>& out);
  // Inference only: replace this rank's f32 weight slice (out_pp, in) by its blockwise-quantized copy
  // and free the f32 weight and its gradient; forward then runs the quantized GEMV, backward refuses.
  // ShapeError unless in_features is a multiple of 32.
  void quantize(WeightFormat format);
  // The ShapeError quantize(format) would throw, without quantizing (checked before loading).
  void check_quantizable(WeightFormat format) const;
  const QuantizedWeight& quantized_weight() const { return qweight_; }
  // Inference with quantized weights loaded tensor by tensor: take `q`, this rank's (rows, cols)
  // slice already quantized, as the weight (ShapeError if its shape is not this rank's slice).
  void install_quantized(QuantizedWeight q);

  // Bytes kept from forward to backward that this layer owns: the bf16 input copy (bf16, not
  // sequence parallel); the f32 input belongs to the caller.
  int64_t activation_bytes() const { return x_bf16_.owned_bytes(); }

 private:
  // inp itself, or (sequence parallel) every rank's tokens all-gathered into the workspace.
  const float* whole_input(const float* inp, int64_t N);
  // backward's GEMMs and dX reduction in bf16 mode, the output gradient being in dy_bf16_
  void backward_bf16(float* dinp, const bf16* dyb, const float* inp, int64_t N);
  ProcessGroup& tp_;
  ColumnParallelOptions options_;
  int64_t out_per_partition_ = 0;
  int64_t max_tokens_ = 0;
  Tensor gather_scratch_;  // (t, max_tokens, out_pp) for gather_output
  Tensor local_out_;       // (max_tokens, out_pp) for gather_output
  // bf16 mode: the input (kept for dW), the weight (kept for dX) and the output gradient
  Bf16Operand x_bf16_, dy_bf16_;
  Bf16Weight w_bf16_;
  QuantizedWeight qweight_;  // inference with quantized weights; empty otherwise
};

}  // namespace tensorpar
