#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/cross_entropy.hpp"

namespace tensorpar {
using testing::all_close;
using testing::random_vector;

namespace {
// Reference in double: losses and (softmax - onehot) * dloss.
void reference(std::vector<double>& losses, std::vector<double>& dlogits, const std::vector<float>& logits, int64_t ld,
               const std::vector<int32_t>& t, int64_t N, int64_t V, double dloss) {
  losses.assign(N, 0);
  dlogits.assign(N * ld, 0);
  for (int64_t n = 0; n < N; ++n) {
    double m = -1e300, s = 0;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, double(logits[n * ld + j]));
    for (int64_t j = 0; j < V; ++j) s += std::exp(logits[n * ld + j] - m);
    const double lse = m + std::log(s);
    losses[n] = lse - logits[n * ld + t[n]];
    for (int64_t j = 0; j < V; ++j) dlogits[n * ld + j] = (std::exp(logits[n * ld + j] - lse) - (j == t[n])) * dloss;
  }
}
}  // namespace

TEST(CrossEntropy, ForwardBackwardMatchReferenceWithPadding) {
  const int64_t N = 6, V = 50, ld = 64;
  auto logits = random_vector(N * ld, 1, 8.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = V; j < ld; ++j) logits[n * ld + j] = 1e4f;  // padding must be ignored
  logits[3 * ld + 7] = 60.0f;                                   // a dominant class
  std::vector<int32_t> t = {0, 49, 7, 7, 13, 25};
  std::vector<double> e_losses, e_dlogits;
  const float dloss = 1.0f / N;
  reference(e_losses, e_dlogits, logits, ld, t, N, V, dloss);
  std::vector<float> losses(N);
  const float mean = cross_entropy_forward(losses.data(), logits.data(), ld, t.data(), N, V);
  double e_mean = 0;
  for (double l : e_losses) e_mean += l / N;
  EXPECT_TRUE(all_close(losses, std::vector<float>(e_losses.begin(), e_losses.end()), 1e-5, 1e-6));
  EXPECT_NEAR(mean, e_mean, 1e-5 * e_mean);
  std::vector<float> dlogits(N * ld, 42.0f);
  cross_entropy_backward(dlogits.data(), logits.data(), ld, t.data(), N, V, dloss);
  EXPECT_TRUE(all_close(dlogits, std::vector<float>(e_dlogits.begin(), e_dlogits.end()), 1e-5, 1e-7));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = V; j < ld; ++j) ASSERT_EQ(dlogits[n * ld + j], 0.0f) << "padding column " << j << " row " << n;
  // In place (dlogits aliasing logits) gives the same result.
  auto inplace = logits;
  cross_entropy_backward(inplace.data(), inplace.data(), ld, t.data(), N, V, dloss);
  EXPECT_TRUE(all_close(inplace, dlogits, 0, 0));
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t N = 3, V = 11, ld = 12;
  auto logits = random_vector(N * ld, 2, 3.0f);
  std::vector<int32_t> t = {4, 0, 10};
  std::vector<float> dlogits(N * ld), losses(N);
  cross_entropy_backward(dlogits.data(), logits.data(), ld, t.data(), N, V, 1.0f);
  std::vector<float> real(logits), dreal(dlogits);
  testing::expect_gradient("logits", logits, dlogits, [&] {
    cross_entropy_forward(losses.data(), logits.data(), ld, t.data(), N, V);
    double s = 0;
    for (float l : losses) s += l;
    return s;
  }, 1e-2, 16);
}

TEST(CrossEntropy, TargetsOutOfRangeThrow) {
  std::vector<float> logits(2 * 8, 0.0f), losses(2), d(2 * 8);
  std::vector<int32_t> bad_hi = {1, 5}, bad_lo = {-1, 0};
  EXPECT_THROW(cross_entropy_forward(losses.data(), logits.data(), 8, bad_hi.data(), 2, 5), ShapeError);
  EXPECT_THROW(cross_entropy_forward(losses.data(), logits.data(), 8, bad_lo.data(), 2, 5), ShapeError);
  EXPECT_THROW(cross_entropy_backward(d.data(), logits.data(), 8, bad_hi.data(), 2, 5, 1.0f), ShapeError);
  EXPECT_THROW(cross_entropy_forward(losses.data(), logits.data(), 4, bad_lo.data(), 2, 5), ShapeError);  // ld < V
  // Uniform logits: loss is log V exactly.
  std::vector<int32_t> ok = {4, 0};
  EXPECT_NEAR(cross_entropy_forward(losses.data(), logits.data(), 8, ok.data(), 2, 5), std::log(5.0), 1e-6);
}

}  // namespace tensorpar
