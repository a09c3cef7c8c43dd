// The MLP activations of bf16 training with the rounding to bf16 fused in: the next GEMM reads bf16
// operands, so the activation writes them directly instead of an f32 tensor that a second pass reads
// back and rounds (and, backward, the bias gradient is summed in the same pass). Each function gives
// bit for bit what the unfused kernels give: it evaluates the same formulas (activation_math.hpp) on
// L1-sized tiles and rounds each tile with convert_f32_to_bf16, and sums the bias gradient in bias_backward's order (row by row).
#pragma once
#include <cstdint>

#include "tensorpar/core/bf16.hpp"

namespace tensorpar {

// out (n) = bf16(gelu(inp (n))) = convert_f32_to_bf16 of gelu_forward. inp (n).
void gelu_forward_bf16(bf16* out, const float* inp, int64_t n);
// out (N,C) = bf16(silu(gate) * up) = convert_f32_to_bf16 of swiglu_forward; gate, up (N,C; row stride ld_in).
void swiglu_forward_bf16(bf16* out, const float* gate, const float* up, int64_t N, int64_t C, int64_t ld_in);
// dinp (N,C) = bf16(dout * gelu'(inp)) = convert_f32_to_bf16 of gelu_backward; dbias (C), unless null,
// += the column sums of the f32 gradient before rounding, as bias_backward sums it.
// dout (N,C), inp (N,C).
void gelu_backward_bf16(bf16* dinp, float* dbias, const float* dout, const float* inp, int64_t N, int64_t C);

}  // namespace tensorpar
