// Sequence parallelism (Korthikanti et al. 2022): outside the tensor-parallel regions (norms,
// residual adds, dropout) each rank holds only its contiguous share of the tokens, N/t rows of
// the (B*T, C) activations. Entering a region all-gathers the tokens (backward: reduce-scatter);
// leaving one reduce-scatters the partial sums (backward: all-gather). The two replace the one
// all-reduce of plain TP at the same communication volume, and the activations outside the regions
// shrink by t. Norm parameters then see only their rank's tokens: their gradients are summed over
// the group after the backward.
#pragma once
#include <cstdint>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/kernels/matmul.hpp"

namespace tensorpar {

// Transient buffers shared by every layer of a model (each layer call uses them and is done), so
// the gathered activations are never held per layer: backward gathers again, as Megatron does.
struct SequenceParallelWorkspace {
  SequenceParallelWorkspace(int64_t max_tokens, int64_t max_width, Precision precision);
  Tensor gathered;              // (max_tokens, max_width): an all-gathered activation or gradient
  Tensor partial;               // (max_tokens, max_width): partial sums before a reduce-scatter
  Bf16Operand gathered_bf16;    // bf16 copy of `gathered` in bf16 mode
};

// Both carry activations (gradients): they use the wire format tp.comm_dtype() (--tp-comm-dtype).
// full (N, C) = concatenation of every rank's shard (N/t, C): rank-major blocks are token order.
void sequence_all_gather(ProcessGroup& tp, float* full, const float* shard, int64_t N, int64_t C);
// shard (N/t, C) = this rank's rows of the sum over ranks of full (N, C).
void sequence_reduce_scatter(ProcessGroup& tp, float* shard, const float* full, int64_t N, int64_t C);
// Tokens per rank; ConfigError if the group does not divide them.
int64_t tokens_per_rank(const ProcessGroup& tp, int64_t N);

}  // namespace tensorpar
