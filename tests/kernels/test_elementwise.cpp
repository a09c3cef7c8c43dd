#include <gtest/gtest.h>

#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/elementwise.hpp"

namespace tensorpar {
using testing::all_close;
using testing::random_vector;

TEST(Elementwise, AddBiasBroadcastsOverRows) {
  const int64_t N = 5, C = 37;
  auto out = random_vector(N * C, 1), bias = random_vector(C, 2);
  std::vector<float> expected(out);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) expected[n * C + c] = float(double(out[n * C + c]) + bias[c]);
  add_bias(out.data(), bias.data(), N, C);
  EXPECT_TRUE(all_close(out, expected));
}

TEST(Elementwise, BiasBackwardAccumulatesColumnSums) {
  const int64_t N = 9, C = 33;
  auto dout = random_vector(N * C, 3);
  auto dbias = random_vector(C, 4);
  std::vector<float> expected(C);
  for (int64_t c = 0; c < C; ++c) {
    double s = dbias[c];
    for (int64_t n = 0; n < N; ++n) s += dout[n * C + c];
    expected[c] = float(s);
  }
  bias_backward(dbias.data(), dout.data(), N, C);
  EXPECT_TRUE(all_close(dbias, expected, 1e-5, 1e-5));
}

TEST(Elementwise, AddScaleAndSumOfSquares) {
  const int64_t n = 101;
  auto y = random_vector(n, 5), x = random_vector(n, 6);
  std::vector<float> expected(n);
  for (int64_t i = 0; i < n; ++i) expected[i] = float((double(y[i]) + x[i]) * 0.5);
  add_inplace(y.data(), x.data(), n);
  scale_inplace(y.data(), 0.5f, n);
  EXPECT_TRUE(all_close(y, expected));
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  EXPECT_NEAR(sum_of_squares(x.data(), n), ss, 1e-12 * ss);
  EXPECT_EQ(sum_of_squares(x.data(), 0), 0.0);
}

}  // namespace tensorpar
