// Element-wise activations of the MLP blocks and their backward: GELU (tanh approximation, as GPT-2,
// HF "gelu_new"/"gelu_pytorch_tanh") with an optional fused bias add, and SwiGLU (Llama).
#pragma once
#include <cstdint>

namespace tensorpar {

// out (n) = gelu(inp (n)), gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp (n) = dout (n) * gelu'(inp (n)). OVERWRITES dinp; dinp may alias dout.
void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n);
// Fused bias + GELU: pre (N,C) += bias (C) in place (kept for the backward); out (N,C) = gelu(pre).
void bias_gelu_forward(float* pre, float* out, const float* bias, int64_t N, int64_t C);

// SwiGLU: out (N,C) = silu(gate) * up with silu(x) = x sigmoid(x). gate and up are (N,C) with row
// stride ld_in (>= C), so they may be the two halves of one fused (N, 2C) projection (ld_in = 2C).
void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t C, int64_t ld_in);
// dgate, dup (N,C, row stride ld_in) OVERWRITTEN with the gradients; dout (N,C) contiguous.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N,
                     int64_t C, int64_t ld_in);

}  // namespace tensorpar
