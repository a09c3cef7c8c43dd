// ParallelMLP: column-parallel → activation applied locally → row-parallel. The hidden activation
// stays sharded, so the whole MLP costs exactly one all-reduce forward (in the row-parallel layer)
// and one backward (in the column-parallel layer).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/parallel/column_parallel_linear.hpp"
#include "tensorpar/parallel/row_parallel_linear.hpp"

namespace tensorpar {

enum class MlpActivation {
  Gelu,   // GPT-2: proj(gelu_tanh(fc(x)))
  SwiGLU  // Llama: down(silu(gate(x)) * up(x)); gate and up fused into one column-parallel GEMM
};

struct MlpOptions {
  std::string fc_name;    // "h.0.mlp.c_fc"; for SwiGLU the fused gate|up projection
  std::string proj_name;  // "h.0.mlp.c_proj"
  int64_t hidden = 0;
  int64_t ffn_hidden = 0;  // 4*hidden for GPT-2
  MlpActivation activation = MlpActivation::Gelu;
  bool bias = true;
  uint64_t seed = 0;
  float init_std = 0.02f;
  float proj_init_std = 0.02f;  // GPT-2 scales residual projections by 1/sqrt(2*layers)
  Precision precision = Precision::F32;
  SequenceParallelWorkspace* workspace = nullptr;  // sequence parallel: inp/out/dinp/dout are N/t tokens
  bool sequence_parallel = false;
  // Of the linears' weights (ColumnParallelOptions::alloc); anything but Training: no gradient scratch.
  ParameterAlloc alloc = ParameterAlloc::Training;
};

class ParallelMLP {
 public:
  // share_with: keep every activation and scratch buffer in that MLP's (built alike) instead of
  // allocating them: full activation recomputation, where each block runs forward again (recompute)
  // right before its backward, so one set serves every block.
  ParallelMLP(ProcessGroup& tp, const MlpOptions& options, int64_t max_tokens, const ParallelMLP* share_with = nullptr);

  // out (N, hidden) = MLP(inp (N, hidden)); out is whole on every rank.
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, hidden) written with the whole input gradient; parameter gradients accumulate.
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  void collect_parameters(std::vector<Parameter*>& out);
  // Use `first`'s gradient scratch (dact, dpre) instead of this layer's own: it lives only inside
  // one backward call, so all the layers of a model can share it. `first` is built alike.
  void share_gradient_scratch(const ParallelMLP& first);
  // Forward up to what backward needs (the fc output and the activation), for full recomputation:
  // the output projection is skipped, and with it its GEMM and all-reduce (or reduce-scatter).
  void recompute(const float* inp, int64_t N);
  // Bytes kept from forward to backward that this MLP owns (fc output, activation, bf16 copies).
  int64_t activation_bytes() const;

  ColumnParallelLinear fc;
  RowParallelLinear proj;

 private:
  MlpOptions options_;
  int64_t ffn_per_partition_ = 0;
  Tensor pre_;   // (max_tokens, ffn_pp) or (max_tokens, 2*ffn_pp) for SwiGLU: fc output, kept for backward
  // (max_tokens, ffn_pp): activation output = proj input, kept for backward; in bf16 mode written only
  // by recompute (forward writes proj's bf16 copy directly), so it could be dropped there (not yet:
  // the memory formula counts it)
  Tensor act_;
  Tensor dact_;  // (max_tokens, ffn_pp)
  Tensor dpre_;  // like pre_
};

}  // namespace tensorpar
