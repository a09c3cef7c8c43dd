#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/activations.hpp"

namespace tensorpar {
using testing::all_close;
using testing::dot;
using testing::expect_gradient;
using testing::random_vector;

namespace {
double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double silu_ref(double x) { return x / (1 + std::exp(-x)); }
}  // namespace

TEST(Gelu, ForwardMatchesTanhFormulaIncludingTails) {
  auto x = random_vector(1000, 1, 6.0f);
  x.insert(x.end(), {0.0f, -1e-6f, 1e-6f, -30.0f, 30.0f, -100.0f, 100.0f, -9.0f});
  std::vector<float> out(x.size()), expected(x.size());
  for (size_t i = 0; i < x.size(); ++i) expected[i] = float(gelu_ref(x[i]));
  gelu_forward(out.data(), x.data(), int64_t(x.size()));
  EXPECT_TRUE(all_close(out, expected, 1e-5, 1e-7));
}

TEST(Gelu, BackwardMatchesFiniteDifferencesAndMayAlias) {
  const int64_t n = 300;
  auto x = random_vector(n, 2, 4.0f), w = random_vector(n, 3);
  std::vector<float> out(n), dx(n);
  gelu_backward(dx.data(), w.data(), x.data(), n);
  // Analytic reference in double: d/dx gelu.
  std::vector<float> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    const double h = 1e-5;
    expected[i] = float(w[i] * (gelu_ref(x[i] + h) - gelu_ref(x[i] - h)) / (2 * h));
  }
  EXPECT_TRUE(all_close(dx, expected, 1e-4, 1e-6));
  expect_gradient("x", x, dx, [&] {
    gelu_forward(out.data(), x.data(), n);
    return dot(out, w);
  });
  std::vector<float> alias(w);
  gelu_backward(alias.data(), alias.data(), x.data(), n);
  EXPECT_TRUE(all_close(alias, dx, 0, 0));
}

TEST(Gelu, FusedBiasGelu) {
  const int64_t N = 7, C = 19;
  auto pre = random_vector(N * C, 4, 3.0f), bias = random_vector(C, 5);
  std::vector<float> out(N * C), exp_pre(N * C), exp_out(N * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      exp_pre[n * C + c] = pre[n * C + c] + bias[c];
      exp_out[n * C + c] = float(gelu_ref(exp_pre[n * C + c]));
    }
  bias_gelu_forward(pre.data(), out.data(), bias.data(), N, C);
  EXPECT_TRUE(all_close(pre, exp_pre, 0, 0));
  EXPECT_TRUE(all_close(out, exp_out, 1e-5, 1e-7));
}

TEST(SwiGlu, ForwardOnHalvesOfOneBuffer) {
  const int64_t N = 6, C = 21, ld = 2 * C + 3;
  auto buf = random_vector(N * ld, 6, 5.0f);
  const float* gate = buf.data();
  const float* up = buf.data() + C;
  std::vector<float> out(N * C), expected(N * C);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) expected[n * C + c] = float(silu_ref(gate[n * ld + c]) * up[n * ld + c]);
  swiglu_forward(out.data(), gate, up, N, C, ld);
  EXPECT_TRUE(all_close(out, expected, 1e-5, 1e-7));
  EXPECT_THROW(swiglu_forward(out.data(), gate, up, N, C, C - 1), ShapeError);
}

TEST(SwiGlu, BackwardMatchesFiniteDifferencesAndOverwrites) {
  const int64_t N = 4, C = 13, ld = 2 * C;
  auto buf = random_vector(N * ld, 7, 4.0f), w = random_vector(N * C, 8);
  std::vector<float> dbuf(N * ld, 123.0f), out(N * C);
  swiglu_backward(dbuf.data(), dbuf.data() + C, w.data(), buf.data(), buf.data() + C, N, C, ld);
  std::vector<float> again(N * ld, -7.0f);
  swiglu_backward(again.data(), again.data() + C, w.data(), buf.data(), buf.data() + C, N, C, ld);
  EXPECT_TRUE(all_close(again, dbuf, 0, 0)) << "backward must overwrite, not accumulate";
  expect_gradient("gate|up", buf, dbuf, [&] {
    swiglu_forward(out.data(), buf.data(), buf.data() + C, N, C, ld);
    return dot(out, w);
  }, 1e-2, 24);
}

}  // namespace tensorpar
