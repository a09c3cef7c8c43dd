// The scalar GELU and SwiGLU formulas, shared by the f32 kernels (activations.cpp) and the fused
// bf16 ones (activations_bf16.cpp) so both compute the same values. Internal to kernels/.
#pragma once
#include "tensorpar/kernels/vec_math.hpp"

namespace tensorpar::detail {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// 0.5 (1 + tanh(u)) = sigmoid(2u), so gelu(x) = x sigmoid(2u): no cancellation near x = 0 or for x << 0.
inline float gelu(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  return x * sigmoid(2.0f * u);
}

// d/dx [x s(2u)] = s + x * 2 s (1 - s) * u'(x),  u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
inline float gelu_grad(float x) {
  const float u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
  const float s = sigmoid(2.0f * u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du;
}

// SwiGLU's product silu(g) u.
inline float swiglu(float g, float u) { return g * sigmoid(g) * u; }

}  // namespace tensorpar::detail
