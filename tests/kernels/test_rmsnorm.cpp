#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/rmsnorm.hpp"

namespace tensorpar {
using testing::all_close;
using testing::dot;
using testing::expect_gradient;
using testing::random_vector;

TEST(RmsNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 7, C = 53;
  const float eps = 1e-6f;
  auto x = random_vector(N * C, 1, 3.0f), w = random_vector(C, 2);
  std::vector<float> out(N * C), rstd(N), e_out(N * C), e_rstd(N);
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[n * C + c]) * x[n * C + c];
    const double r = 1 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; ++c) e_out[n * C + c] = float(w[c] * x[n * C + c] * r);
    e_rstd[n] = float(r);
  }
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  EXPECT_TRUE(all_close(out, e_out, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(rstd, e_rstd));
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 4, C = 30;
  auto x = random_vector(N * C, 3, 2.0f), w = random_vector(C, 4), dout = random_vector(N * C, 5);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  auto loss = [&] {
    std::vector<float> r(N);
    rmsnorm_forward(out.data(), r.data(), x.data(), w.data(), N, C, 1e-5f);
    return dot(out, dout);
  };
  expect_gradient("inp", x, dx, loss, 1e-2, 16);
  expect_gradient("weight", w, dw, loss, 1e-2, 12);
  std::vector<float> dx2(dx), dw2(dw);
  rmsnorm_backward(dx2.data(), dw2.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  for (auto& e : dx) e *= 2;
  for (auto& e : dw) e *= 2;
  EXPECT_TRUE(all_close(dx2, dx));
  EXPECT_TRUE(all_close(dw2, dw));
}

TEST(RmsNorm, ParallelBackwardMatchesDoubleReference) {
  const int64_t N = 80, C = 1024;
  auto x = random_vector(N * C, 6), w = random_vector(C, 7), dout = random_vector(N * C, 8);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
  std::vector<double> e_dw(C, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) e_dw[c] += double(dout[n * C + c]) * x[n * C + c] * rstd[n];
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_TRUE(all_close(dw, std::vector<float>(e_dw.begin(), e_dw.end()), 1e-4, 1e-4));
}

}  // namespace tensorpar
