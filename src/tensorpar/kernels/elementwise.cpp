#include "tensorpar/kernels/elementwise.hpp"

#include <algorithm>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/thread_chunk.hpp"

namespace tensorpar {

void add_bias(float* out, const float* bias, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "add_bias: sizes must be non-negative, got N={} C={}", N, C);
#pragma omp parallel for schedule(static) if (N * C >= kParallelMinElements)
  for (int64_t n = 0; n < N; ++n) {
    float* o = out + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] += bias[c];
  }
}

void bias_backward(float* dbias, const float* dout, int64_t N, int64_t C) {
  TP_CHECK(N >= 0 && C >= 0, ShapeError, "bias_backward: sizes must be non-negative, got N={} C={}", N, C);
  // Rows outer, columns inner: every pass is a contiguous, vectorised sweep; dbias stays in L1/L2.
  // Threads split the columns, so each sum adds its rows in the same order whatever the thread count.
#pragma omp parallel if (N * C >= kParallelMinElements)
  {
    const ThreadRange cols = thread_chunk(C, 16);
    const int64_t begin = cols.begin, end = cols.end;
    for (int64_t n = 0; n < N; ++n) {
      const float* d = dout + n * C;
#pragma omp simd
      for (int64_t c = begin; c < end; ++c) dbias[c] += d[c];
    }
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void scale_inplace(float* y, float s, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}

namespace {
double sum_of_squares_serial(const float* x, int64_t n) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * double(x[i]);
  return acc;
}
}  // namespace

double sum_of_squares(const float* x, int64_t n) {
  if (n < kParallelMinElements) return sum_of_squares_serial(x, n);
  // A fixed split into kParts ranges, summed in order: the same bits whatever the thread count (a
  // checkpoint resumed with other --threads clips its gradients identically), and all cores busy.
  constexpr int64_t kParts = 64;
  const int64_t part = (n + kParts - 1) / kParts;
  double partial[kParts];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < kParts; ++p) {
    const int64_t begin = std::min(n, p * part), end = std::min(n, begin + part);
    partial[p] = sum_of_squares_serial(x + begin, end - begin);
  }
  double acc = 0.0;
  for (double v : partial) acc += v;
  return acc;
}

}  // namespace tensorpar
