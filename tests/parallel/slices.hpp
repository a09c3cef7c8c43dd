// Slicing helpers for comparing a rank's shard with the serial (TP=1) tensor computed in the same test.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <cmath>

#include "tensorpar/parallel/parameter.hpp"

namespace tensorpar::testing {

// Columns [c0, c0 + nc) of a row-major (rows, cols) matrix.
inline std::vector<float> columns(std::span<const float> m, int64_t rows, int64_t cols, int64_t c0, int64_t nc) {
  std::vector<float> out(size_t(rows * nc));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < nc; ++j) out[size_t(i * nc + j)] = m[size_t(i * cols + c0 + j)];
  return out;
}

// The elements of the global tensor `full` that parameter `p` holds locally, in local order.
inline std::vector<float> local_slice(const Parameter& p, std::span<const float> full) {
  std::vector<float> out(size_t(p.value.numel()));
  for (int64_t i = 0; i < p.value.numel(); ++i) out[size_t(i)] = full[size_t(p.global_index(i))];
  return out;
}

inline std::span<const float> values(const Parameter& p) { return p.value.span(); }

// Every `stride`-th element of p's gradient against a central difference of loss() with respect to
// that element of p's value (perturbed in place and restored): |grad - fd| <= atol + rtol * |fd|.
inline void expect_gradient_matches_finite_differences(Parameter& p, const std::function<double()>& loss,
                                                       size_t stride, double atol, double rtol = 0,
                                                       double eps = 1e-3) {
  float* v = p.value.f32();
  for (size_t i = 0; i < size_t(p.value.numel()); i += stride) {
    const float saved = v[i];
    v[i] = float(saved + eps);
    const double plus = loss();
    v[i] = float(saved - eps);
    const double minus = loss();
    v[i] = saved;
    const double fd = (plus - minus) / (2 * eps);
    EXPECT_NEAR(p.grad.f32()[i], fd, atol + rtol * std::fabs(fd)) << p.name << "[" << i << "]";
  }
}
inline std::span<const float> grads(const Parameter& p) { return p.grad.span(); }

}  // namespace tensorpar::testing
