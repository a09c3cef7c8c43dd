#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/layernorm.hpp"

namespace tensorpar {
using testing::all_close;
using testing::dot;
using testing::expect_gradient;
using testing::random_vector;

TEST(LayerNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 6, C = 45;
  const float eps = 1e-5f;
  auto x = random_vector(N * C, 1, 2.0f), w = random_vector(C, 2), b = random_vector(C, 3);
  for (int64_t c = 0; c < C; ++c) x[C + c] += 100.0f;  // a row with a large mean
  std::vector<float> out(N * C), mean(N), rstd(N), e_out(N * C), e_mean(N), e_rstd(N);
  // Float error bound of y = (x - mu) * rs * w + b, whatever the summation order (u = 2^-24):
  // the summed mean is off by |dmu| <= C u mean|x| (recursive summation: gamma_{C-1} sum|x|, plus the
  // division), which shifts every centred value; the two-pass variance is first-order insensitive to
  // dmu and has relative error <= (C + 2) u, so rs has <= (C/2 + 3) u; the final multiply-adds add
  // 4 u (|y| + |b|). For the row with mean 100 the first term dominates, so an unoptimised build
  // (sequential sums) and a vectorised one (8 or 16 partial sums) both pass, while a one-pass
  // variance (E[x^2] - mu^2, error ~ u mean^2 / var) exceeds it.
  std::vector<double> tol(N * C), mean_tol(N);
  for (int64_t n = 0; n < N; ++n) {
    double m = 0, v = 0, mean_abs = 0;
    for (int64_t c = 0; c < C; ++c) m += x[n * C + c], mean_abs += std::fabs(x[n * C + c]);
    m /= C;
    mean_abs /= C;
    for (int64_t c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    const double rs = 1 / std::sqrt(v / C + eps);
    for (int64_t c = 0; c < C; ++c) {
      const double centred = x[n * C + c] - m, y = centred * rs * w[c] + b[c];
      e_out[n * C + c] = float(y);
      tol[n * C + c] = testing::kFloatU * (C * mean_abs * rs * std::fabs(w[c]) +
                                           (C / 2.0 + 3) * std::fabs(centred) * rs * std::fabs(w[c]) +
                                           4 * (std::fabs(y) + std::fabs(b[c])));
    }
    e_mean[n] = float(m);
    e_rstd[n] = float(rs);
    mean_tol[n] = testing::kFloatU * (C * mean_abs + std::fabs(m));
  }
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, eps);
  EXPECT_TRUE(testing::all_within(out, e_out, tol));
  EXPECT_TRUE(testing::all_within(mean, e_mean, mean_tol));
  EXPECT_TRUE(all_close(rstd, e_rstd));  // relative error <= (C/2 + 3) u = 1.5e-6
}

TEST(LayerNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 5, C = 24;
  auto x = random_vector(N * C, 4, 2.0f), w = random_vector(C, 5), b = random_vector(C, 6);
  auto dout = random_vector(N * C, 7);
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  auto loss = [&] {
    std::vector<float> m(N), r(N);
    layernorm_forward(out.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    return dot(out, dout);
  };
  expect_gradient("inp", x, dx, loss, 1e-2, 16);
  expect_gradient("weight", w, dw, loss);
  expect_gradient("bias", b, db, loss);

  std::vector<float> dx2(dx), dw2(dw), db2(db);
  layernorm_backward(dx2.data(), dw2.data(), db2.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N,
                     C);
  for (auto* v : {&dx, &dw, &db})
    for (auto& e : *v) e *= 2;
  EXPECT_TRUE(all_close(dx2, dx));
  EXPECT_TRUE(all_close(dw2, dw));
  EXPECT_TRUE(all_close(db2, db));
}

TEST(LayerNorm, ParallelBackwardMatchesSerial) {
  // Large enough to take the multi-threaded path with per-thread partial sums.
  const int64_t N = 96, C = 1024;
  auto x = random_vector(N * C, 8), w = random_vector(C, 9), b = random_vector(C, 10), dout = random_vector(N * C, 11);
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
  std::vector<double> e_dw(C, 0), e_db(C, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      e_dw[c] += (x[n * C + c] - mean[n]) * rstd[n] * dout[n * C + c];
      e_db[c] += dout[n * C + c];
    }
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  EXPECT_TRUE(all_close(dw, std::vector<float>(e_dw.begin(), e_dw.end()), 1e-4, 1e-4));
  EXPECT_TRUE(all_close(db, std::vector<float>(e_db.begin(), e_db.end()), 1e-4, 1e-4));
}

}  // namespace tensorpar
