#include "tensorpar/kernels/activations.hpp"

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/activation_math.hpp"

namespace tensorpar {
namespace {

using detail::gelu;
using detail::gelu_grad;

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) out[i] = gelu(inp[i]);
}

void gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n) {
  // Element i reads dout[i] before writing dinp[i], so dinp == dout is safe.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * gelu_grad(inp[i]);
}

void bias_gelu_forward(float* pre, float* out, const float* bias, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "bias_gelu_forward: sizes must be non-negative, got N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t r = 0; r < N; ++r) {
    float* p = pre + r * C;
    float* o = out + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float x = p[c] + bias[c];
      p[c] = x;
      o[c] = gelu(x);
    }
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t N, int64_t C, int64_t ld_in) {
  TP_CHECK(ld_in >= C, ShapeError, "swiglu_forward: row stride ld_in={} is smaller than C={}; pass ld_in >= C",
           ld_in, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate + r * ld_in;
    const float* u = up + r * ld_in;
    float* o = out + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] = detail::swiglu(g[c], u[c]);
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t N,
                     int64_t C, int64_t ld_in) {
  TP_CHECK(ld_in >= C, ShapeError, "swiglu_backward: row stride ld_in={} is smaller than C={}; pass ld_in >= C",
           ld_in, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate + r * ld_in;
    const float* u = up + r * ld_in;
    const float* d = dout + r * C;
    float* dg = dgate + r * ld_in;
    float* du = dup + r * ld_in;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      // silu'(x) = s (1 + x (1 - s)), s = sigmoid(x). Read everything before writing (dgate may alias gate).
      const float x = g[c], s = detail::sigmoid(x), uc = u[c], dc = d[c];
      du[c] = dc * x * s;
      dg[c] = dc * uc * s * (1.0f + x * (1.0f - s));
    }
  }
}

}  // namespace tensorpar
