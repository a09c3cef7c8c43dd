// RMSNorm over the last dimension (HF LlamaRMSNorm: y = weight * (x * rsqrt(mean(x^2) + eps)), all
// in f32), forward and backward. The forward saves 1/rms per row for the backward.
#pragma once
#include <cstdint>

namespace tensorpar {

// out (N,C) = inp * rstd * weight; rstd (N) = 1/sqrt(mean(inp^2) + eps) saved. inp (N,C), weight (C).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C, float eps);
// ACCUMULATES into dinp (N,C) and dweight (C). dout (N,C), inp (N,C), weight (C), rstd (N).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C);

}  // namespace tensorpar
