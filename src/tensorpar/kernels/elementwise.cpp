#include "tensorpar/kernels/elementwise.hpp"

#include "tensorpar/core/error.hpp"

namespace tensorpar {

void add_bias(float* out, const float* bias, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "add_bias: sizes must be non-negative, got N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (N * C >= (1 << 18))
  for (int64_t n = 0; n < N; ++n) {
    float* o = out + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] += bias[c];
  }
}

void bias_backward(float* dbias, const float* dout, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "bias_backward: sizes must be non-negative, got N={} C={}", N, C);
  // Rows outer, columns inner: every pass is a contiguous, vectorised sweep; dbias stays in L1/L2.
  for (int64_t n = 0; n < N; ++n) {
    const float* d = dout + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dbias[c] += d[c];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void scale_inplace(float* y, float s, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}

double sum_of_squares(const float* x, int64_t n) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * double(x[i]);
  return acc;
}

}  // namespace tensorpar
