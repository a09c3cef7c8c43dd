// Scalar math written so that GCC vectorises the loops that call it (AVX-512 at -march=native).
// std::exp/std::tanh are not vectorised without -ffast-math (glibc's libmvec is only declared under
// __FAST_MATH__), and in softmax/GELU/SiLU loops they cost more than everything else together.
// Internal to kernels/: not part of the public API.
#pragma once
#include <bit>
#include <cstdint>

namespace tensorpar::detail {

// e^x for float x, max relative error ~2 ulp on [-86, 88]; returns 0 below -86 (true value < 5e-38)
// and e^88 above 88. Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then a degree-7 Taylor
// polynomial (truncation error < 1e-8) and 2^n added to the exponent bits.
inline float exp_approx(float x) {
  const float xc = x < -86.0f ? -86.0f : (x > 88.0f ? 88.0f : x);
  // Round-to-nearest via the 1.5*2^23 trick: exact without -ffast-math, and vectorisable.
  constexpr float kShift = 12582912.0f;
  const float t = xc * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  float r = xc - n * 0.693145751953125f;  // ln2 high part (exact in float)
  r = r - n * 1.428606820309417e-06f;     // ln2 low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float y = std::bit_cast<float>(std::bit_cast<int32_t>(p) + (ni << 23));
  return x < -86.0f ? 0.0f : y;
}

// 1 / (1 + e^-x), no cancellation for either sign.
inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

}  // namespace tensorpar::detail
