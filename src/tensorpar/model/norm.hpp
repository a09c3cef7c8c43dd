// Norm: the replicated normalisation layer of a block (LayerNorm for GPT-2, RMSNorm for Llama).
// Its parameters are replicated on every rank; their gradients come out identical on every rank
// because its input and output gradient are whole on every rank, so they need no all-reduce.
#pragma once
#include <string>
#include <vector>

#include "tensorpar/parallel/parameter.hpp"

namespace tensorpar {

enum class NormKind { LayerNorm, RMSNorm };

class Norm {
 public:
  // share_with: keep mean/rstd in that norm's buffers instead of allocating them (full activation
  // recomputation: the blocks run forward again right before their backward). alloc: Inference
  // keeps no gradients (weights still start at 1, biases at 0).
  Norm(NormKind kind, const std::string& name, int64_t hidden, float eps, int group_size, int64_t max_tokens,
       const Norm* share_with = nullptr, ParameterAlloc alloc = ParameterAlloc::Training);

  // out (N, C) = norm(inp (N, C)); keeps mean/rstd for backward.
  void forward(float* out, const float* inp, int64_t N);
  // dinp (N, C) += input gradient; parameter gradients accumulate.
  void backward(float* dinp, const float* dout, const float* inp, int64_t N);

  void collect_parameters(std::vector<Parameter*>& out);
  // Bytes of the buffers kept for backward that this norm owns (not those it shares).
  int64_t activation_bytes() const;

  Parameter weight;
  Parameter bias;  // LayerNorm only

 private:
  NormKind kind_;
  int64_t hidden_ = 0;
  float eps_ = 0;
  Tensor mean_, rstd_;  // (max_tokens); mean_ LayerNorm only
};

}  // namespace tensorpar
