#include "tensorpar/kernels/rmsnorm.hpp"

#include <omp.h>

#include <cmath>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/scratch.hpp"

namespace tensorpar {
namespace {

// One row of the backward; dw may be a thread's private partial sum.
// y_c = w_c x_c r, r = (mean(x^2) + eps)^-1/2  =>  dx_j = r w_j dy_j - r^3 x_j / C * sum_c w_c dy_c x_c.
inline void backward_row(float* dx, float* dw, const float* dy, const float* x, const float* w, float r, int64_t C) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < C; ++c) s += w[c] * dy[c] * x[c];
  const float k = r * r * r * s / float(C);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    dw[c] += dy[c] * x[c] * r;
    dx[c] += r * w[c] * dy[c] - k * x[c];
  }
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C, float eps) {
  TP_CHECK(N >= 0 && C > 0, ShapeError, "rmsnorm_forward: need N >= 0 and C > 0, got N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;
    float* y = out + n * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / float(C) + eps);
    // HF order: weight * (x * r), both products in f32.
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = weight[c] * (x[c] * r);
    rstd[n] = r;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C > 0, ShapeError, "rmsnorm_backward: need N >= 0 and C > 0, got N={} C={}", N, C);
  const int threads = N * C >= kParallelMinElements ? omp_get_max_threads() : 1;
  if (threads <= 1) {
    for (int64_t n = 0; n < N; ++n) backward_row(dinp + n * C, dweight, dout + n * C, inp + n * C, weight, rstd[n], C);
    return;
  }
  float* partial = detail::scratch_floats(size_t(threads) * C);
  for (int64_t i = 0; i < int64_t(threads) * C; ++i) partial[i] = 0.0f;  // all slots: the team may be smaller
#pragma omp parallel num_threads(threads)
  {
    float* dw = partial + size_t(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) backward_row(dinp + n * C, dw, dout + n * C, inp + n * C, weight, rstd[n], C);
  }
  for (int t = 0; t < threads; ++t) {
    const float* dw = partial + size_t(t) * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dweight[c] += dw[c];
  }
}

}  // namespace tensorpar
