#include "tensorpar/kernels/layernorm.hpp"

#include <omp.h>

#include <cmath>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/scratch.hpp"

namespace tensorpar {
namespace {

// One row of the backward. dweight/dbias here may be a thread's private partial sums.
inline void backward_row(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                         float mu, float rs, int64_t C) {
  // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)),  dnorm = w * dy.
  float sum_dnorm = 0.0f, sum_dnorm_norm = 0.0f;
#pragma omp simd reduction(+ : sum_dnorm, sum_dnorm_norm)
  for (int64_t c = 0; c < C; ++c) {
    const float norm = (x[c] - mu) * rs;
    const float dnorm = w[c] * dy[c];
    sum_dnorm += dnorm;
    sum_dnorm_norm += dnorm * norm;
  }
  const float mean_dnorm = sum_dnorm / float(C), mean_dnorm_norm = sum_dnorm_norm / float(C);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const float norm = (x[c] - mu) * rs;
    const float dnorm = w[c] * dy[c];
    db[c] += dy[c];
    dw[c] += norm * dy[c];
    dx[c] += rs * (dnorm - mean_dnorm - norm * mean_dnorm_norm);
  }
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int64_t C, float eps) {
  TP_CHECK(N >= 0 && C > 0, ShapeError, "layernorm_forward: need N >= 0 and C > 0, got N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;
    float* y = out + n * C;
    // Two passes (mean, then centred squares): no catastrophic cancellation for rows with a large mean.
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += x[c];
    const float mu = s / float(C);
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) v += (x[c] - mu) * (x[c] - mu);
    const float rs = 1.0f / std::sqrt(v / float(C) + eps);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mu) * rs * weight[c] + bias[c];
    mean[n] = mu;
    rstd[n] = rs;
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C > 0, ShapeError, "layernorm_backward: need N >= 0 and C > 0, got N={} C={}", N, C);
  const int threads = N * C >= kParallelMinElements ? omp_get_max_threads() : 1;
  if (threads <= 1) {
    for (int64_t n = 0; n < N; ++n)
      backward_row(dinp + n * C, dweight, dbias, dout + n * C, inp + n * C, weight, mean[n], rstd[n], C);
    return;
  }
  // Rows in parallel; each thread sums dweight/dbias privately, then the partials are added in thread order
  // (deterministic for a given thread count).
  float* partial = detail::scratch_floats(size_t(threads) * 2 * C);
  for (int64_t i = 0; i < int64_t(threads) * 2 * C; ++i) partial[i] = 0.0f;  // all slots: the team may be smaller
#pragma omp parallel num_threads(threads)
  {
    float* dw = partial + size_t(omp_get_thread_num()) * 2 * C;
    float* db = dw + C;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      backward_row(dinp + n * C, dw, db, dout + n * C, inp + n * C, weight, mean[n], rstd[n], C);
  }
  for (int t = 0; t < threads; ++t) {
    const float* dw = partial + size_t(t) * 2 * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      dweight[c] += dw[c];
      dbias[c] += dw[C + c];
    }
  }
}

}  // namespace tensorpar
