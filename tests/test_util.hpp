// Helpers shared by the tests: closeness with the first bad index reported, finite differences.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar::testing {

// Element-wise |a - b| <= rtol * max(|a|, |b|) + atol. On failure names the first bad index and the
// largest difference, so a wrong shard offset is visible at a glance.
inline ::testing::AssertionResult all_close(std::span<const float> actual, std::span<const float> expected,
                                            double rtol = 1e-5, double atol = 1e-6) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "sizes differ: " << actual.size() << " vs " << expected.size();
  size_t first_bad = actual.size(), worst = 0;
  double worst_diff = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i], diff = std::fabs(a - e);
    const bool ok = diff <= rtol * std::max(std::fabs(a), std::fabs(e)) + atol;
    if (!ok && first_bad == actual.size()) first_bad = i;
    if (!(diff <= worst_diff)) { worst_diff = diff; worst = i; }
  }
  if (first_bad == actual.size()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "first bad index " << first_bad << ": " << actual[first_bad] << " vs "
                                       << expected[first_bad] << "; max |diff| " << worst_diff << " at " << worst
                                       << " (" << actual[worst] << " vs " << expected[worst] << ")";
}

// Unit roundoff of float (2^-24): one correctly rounded float operation has relative error <= kFloatU.
inline constexpr double kFloatU = 0x1p-24;

// Element-wise |a - b| <= tol[i]: for tolerances derived per element from an error bound. Reports
// like all_close, plus the tolerance at the first bad index.
inline ::testing::AssertionResult all_within(std::span<const float> actual, std::span<const float> expected,
                                             std::span<const double> tol) {
  if (actual.size() != expected.size() || actual.size() != tol.size())
    return ::testing::AssertionFailure() << "sizes differ: " << actual.size() << " vs " << expected.size() << " vs "
                                         << tol.size() << " tolerances";
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::fabs(double(actual[i]) - double(expected[i]));
    if (!(diff <= tol[i]))
      return ::testing::AssertionFailure() << "first bad index " << i << ": " << actual[i] << " vs " << expected[i]
                                           << ", |diff| " << diff << " > tolerance " << tol[i];
  }
  return ::testing::AssertionSuccess();
}

// Central finite difference of a scalar function with respect to x[i], in double precision steps.
inline double central_difference(std::vector<float>& x, size_t i, const std::function<double()>& f,
                                 double eps = 1e-3) {
  const float saved = x[i];
  x[i] = float(saved + eps);
  const double plus = f();
  x[i] = float(saved - eps);
  const double minus = f();
  x[i] = saved;
  return (plus - minus) / (2 * eps);
}

// Deterministic pseudo-random test data in [-scale, scale).
inline std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    x = scale * (float((s >> 40) & 0xffffff) / 8388608.0f - 1.0f);
  }
  return v;
}

}  // namespace tensorpar::testing
