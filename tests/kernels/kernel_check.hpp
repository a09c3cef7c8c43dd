// Helpers for the kernel tests: finite-difference gradient checks of a scalar loss at a few indices.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace tensorpar::testing {

// sum_i a[i] * w[i] in double: the scalar loss whose gradient with respect to a is w.
inline double dot(const std::vector<float>& a, const std::vector<float>& w) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(w[i]);
  return s;
}

// Compares the analytic gradient `grad` of loss() with respect to x against central differences at
// `count` pseudo-random indices (always including the first and last). |a - fd| <= rtol*max + atol.
inline void expect_gradient(const std::string& name, std::vector<float>& x, const std::vector<float>& grad,
                            const std::function<double()>& loss, double eps = 1e-2, int count = 8,
                            double rtol = 1e-2, double atol = 1e-3) {
  ASSERT_EQ(x.size(), grad.size()) << name;
  std::vector<size_t> idx = {0, x.size() - 1};
  uint64_t s = 0x12345u + x.size();
  for (int k = 2; k < count; ++k) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    idx.push_back(size_t((s >> 33) % x.size()));
  }
  for (size_t i : idx) {
    const double fd = central_difference(x, i, loss, eps);
    EXPECT_NEAR(grad[i], fd, rtol * std::max(std::fabs(fd), std::fabs(double(grad[i]))) + atol)
        << "d loss / d " << name << "[" << i << "]";
  }
}

}  // namespace tensorpar::testing
