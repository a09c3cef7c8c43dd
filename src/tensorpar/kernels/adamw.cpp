#include "tensorpar/kernels/adamw.hpp"

#include <cmath>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) {
  TP_CHECK(p.step >= 1, ConfigError, "adamw_update: step is 1-based and must be >= 1, got {}", p.step);
  TP_CHECK(n >= 0, ShapeError, "adamw_update: n must be non-negative, got {}", n);
  // Scalars in double as PyTorch computes them in Python floats, then the same operation order as its
  // single-tensor path: param *= 1 - lr*wd; m.lerp_(g, 1-b1); v = v*b2 + (1-b2) g^2;
  // param -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
  const double bc1 = 1.0 - std::pow(double(p.beta1), double(p.step));
  const double bc2 = 1.0 - std::pow(double(p.beta2), double(p.step));
  const float decay = float(1.0 - double(p.lr) * double(p.weight_decay));
  const float step_size = float(double(p.lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float w1 = float(1.0 - double(p.beta1)), w2 = float(1.0 - double(p.beta2));
  const float b2 = p.beta2, eps = p.eps;
#pragma omp parallel for simd schedule(static) if (n >= (1 << 18))
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = m[i] + w1 * (g - m[i]);  // lerp, as torch for weight < 0.5 (beta1 > 0.5)
    const float vi = v[i] * b2 + w2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * decay - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
  }
}

}  // namespace tensorpar
