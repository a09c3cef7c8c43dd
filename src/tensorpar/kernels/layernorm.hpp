// LayerNorm over the last dimension (PyTorch nn.LayerNorm: biased variance, eps inside the sqrt),
// forward and backward. The forward saves mean and 1/std per row for the backward.
#pragma once
#include <cstdint>

namespace tensorpar {

// out (N,C) = (inp - mean) * rstd * weight + bias; mean (N), rstd (N) = 1/sqrt(var + eps) saved.
// inp (N,C), weight (C), bias (C).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps);
// ACCUMULATES into dinp (N,C), dweight (C), dbias (C). dout (N,C), inp (N,C), weight (C), mean (N), rstd (N).
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);

}  // namespace tensorpar
