// The kernels' OpenMP paths against their one-thread results, whatever OMP_NUM_THREADS the suite runs
// with: each kernel runs at a size above its threading threshold with 1 and with 4 threads. Work split
// by rows or (batch, head) tasks computes every output on one thread with the same code, so results may
// differ only where a vector loop's remainder falls differently (a few ulps); sums over rows (dweight,
// dbias) add per-thread partials in another order, bounded by N * 2^-24 * sum |terms|. A race or a
// wrong partition breaks these by O(1).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "tensorpar/kernels/activations.hpp"
#include "tensorpar/kernels/attention.hpp"
#include "tensorpar/kernels/cross_entropy.hpp"
#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/kernels/layernorm.hpp"
#include "tensorpar/kernels/rmsnorm.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::random_vector;

// Runs f with `threads` OpenMP threads, then restores the previous setting.
template <class F>
void with_threads(int threads, const F& f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  f();
  omp_set_num_threads(saved);
}

constexpr double kUlps = 1e-6;  // 8 ulps of float, relative
constexpr double kUnitRoundoff = 1.0 / (1 << 24);

TEST(Threads, AttentionForwardAndBackwardEqualOneThread) {
  const AttentionDims d{2, 130, 4, 2, 32};  // B*T*T*H*hd = 4.3M: above the per-head loop's 2^20 threshold
  const int64_t rows = d.batch * d.seq, width = (d.n_heads + 2 * d.n_kv_heads) * d.head_dim;
  const int64_t out_width = d.n_heads * d.head_dim;
  const auto qkv = random_vector(size_t(rows * width), 1), dout = random_vector(size_t(rows * out_width), 2);
  std::vector<float> out[2], lse[2], dqkv[2];
  for (int k = 0; k < 2; ++k) {
    out[k].assign(size_t(rows * out_width), 0.0f);
    lse[k].assign(size_t(d.batch * d.n_heads * d.seq), 0.0f);
    dqkv[k].assign(size_t(rows * width), 0.0f);
    with_threads(k == 0 ? 1 : 4, [&] {
      attention_forward(out[k].data(), lse[k].data(), qkv.data(), d);
      attention_backward(dqkv[k].data(), dout.data(), out[k].data(), lse[k].data(), qkv.data(), d);
    });
  }
  EXPECT_TRUE(all_close(out[1], out[0], kUlps, 1e-6));
  EXPECT_TRUE(all_close(lse[1], lse[0], kUlps, 1e-6));
  EXPECT_TRUE(all_close(dqkv[1], dqkv[0], kUlps, 1e-6));
}

TEST(Threads, LayerNormAndRmsNormEqualOneThreadWithinTheSummationBound) {
  const int64_t N = 96, C = 1024;  // N*C = 98k: above the norms' 2^16 threshold
  const auto x = random_vector(size_t(N * C), 3), w = random_vector(size_t(C), 4), b = random_vector(size_t(C), 5);
  const auto dout = random_vector(size_t(N * C), 6);
  std::vector<float> out[2], mean[2], rstd[2], dx[2], dw[2], db[2];
  for (int k = 0; k < 2; ++k) {
    out[k].assign(size_t(N * C), 0.0f), mean[k].assign(size_t(N), 0.0f), rstd[k].assign(size_t(N), 0.0f);
    dx[k].assign(size_t(N * C), 0.0f), dw[k].assign(size_t(C), 0.0f), db[k].assign(size_t(C), 0.0f);
    with_threads(k == 0 ? 1 : 4, [&] {
      layernorm_forward(out[k].data(), mean[k].data(), rstd[k].data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
      layernorm_backward(dx[k].data(), dw[k].data(), db[k].data(), dout.data(), x.data(), w.data(), mean[k].data(),
                         rstd[k].data(), N, C);
    });
  }
  EXPECT_TRUE(all_close(out[1], out[0], kUlps, 1e-6));
  EXPECT_TRUE(all_close(dx[1], dx[0], kUlps, 1e-6));
  // dweight[c] = sum_n dout * xhat, dbias[c] = sum_n dout: bound each column by its sum of |terms|
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int64_t n = 0; n < N; ++n) {
      sw += std::fabs(double(dout[n * C + c]) * (x[n * C + c] - mean[0][n]) * rstd[0][n]);
      sb += std::fabs(double(dout[n * C + c]));
    }
    ASSERT_LE(std::fabs(dw[1][c] - dw[0][c]), 2 * N * kUnitRoundoff * sw) << "dweight[" << c << "]";
    ASSERT_LE(std::fabs(db[1][c] - db[0][c]), 2 * N * kUnitRoundoff * sb) << "dbias[" << c << "]";
  }

  std::vector<float> rout[2], rr[2], rdx[2], rdw[2];
  for (int k = 0; k < 2; ++k) {
    rout[k].assign(size_t(N * C), 0.0f), rr[k].assign(size_t(N), 0.0f);
    rdx[k].assign(size_t(N * C), 0.0f), rdw[k].assign(size_t(C), 0.0f);
    with_threads(k == 0 ? 1 : 4, [&] {
      rmsnorm_forward(rout[k].data(), rr[k].data(), x.data(), w.data(), N, C, 1e-6f);
      rmsnorm_backward(rdx[k].data(), rdw[k].data(), dout.data(), x.data(), w.data(), rr[k].data(), N, C);
    });
  }
  EXPECT_TRUE(all_close(rout[1], rout[0], kUlps, 1e-6));
  EXPECT_TRUE(all_close(rdx[1], rdx[0], kUlps, 1e-6));
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0;
    for (int64_t n = 0; n < N; ++n) sw += std::fabs(double(dout[n * C + c]) * x[n * C + c] * rr[0][n]);
    ASSERT_LE(std::fabs(rdw[1][c] - rdw[0][c]), 2 * N * kUnitRoundoff * sw) << "rmsnorm dweight[" << c << "]";
  }
}

TEST(Threads, CrossEntropyAndActivationsEqualOneThread) {
  const int64_t N = 64, V = 2000, ld = 2048;  // N*V = 128k: above the 2^16 threshold
  const auto logits = random_vector(size_t(N * ld), 7, 4.0f);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = int32_t((n * 7919) % V);
  const int64_t n_act = 1 << 18;  // above activations' 2^16 threshold
  const auto a = random_vector(size_t(n_act), 8, 3.0f), da = random_vector(size_t(n_act), 9);
  std::vector<float> losses[2], dlogits[2], g[2], dg[2];
  float mean[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    losses[k].assign(size_t(N), 0.0f), dlogits[k].assign(size_t(N * ld), 0.0f);
    g[k].assign(size_t(n_act), 0.0f), dg[k].assign(size_t(n_act), 0.0f);
    with_threads(k == 0 ? 1 : 4, [&] {
      mean[k] = cross_entropy_forward(losses[k].data(), logits.data(), ld, targets.data(), N, V);
      cross_entropy_backward(dlogits[k].data(), logits.data(), ld, targets.data(), N, V, 1.0f / float(N));
      gelu_forward(g[k].data(), a.data(), n_act);
      gelu_backward(dg[k].data(), da.data(), a.data(), n_act);
    });
  }
  EXPECT_TRUE(all_close(losses[1], losses[0], kUlps, 1e-6));
  EXPECT_NEAR(mean[1], mean[0], 4 * kUnitRoundoff * std::fabs(mean[0]));  // double sum of positive terms
  EXPECT_TRUE(all_close(dlogits[1], dlogits[0], kUlps, 1e-9));
  EXPECT_TRUE(all_close(g[1], g[0], kUlps, 1e-7));
  EXPECT_TRUE(all_close(dg[1], dg[0], kUlps, 1e-7));
}


// These split the elements (or, for bias_backward, the columns) so that each output is computed by
// the same instructions on whichever thread: bit-identical to one thread, with 2, 3 and 4 threads, at
// sizes whose thread ranges end mid-vector. sum_of_squares adds fixed ranges in a fixed order, so it
// too must not depend on the thread count.
TEST(Threads, ElementwiseAndBf16ConversionAreBitIdenticalToOneThread) {
  const int64_t N = 131, C = 1003;  // N*C = 131k: above the 2^16 threshold; C not a multiple of 16
  const auto x = random_vector(size_t(N * C), 10, 2.0f), bias = random_vector(size_t(C), 11);
  auto run = [&](int threads) {
    std::vector<float> y = random_vector(size_t(N * C), 12), db = random_vector(size_t(C), 13);
    std::vector<bf16> xb(size_t(N * C) + 1, bf16{0x7fc1});  // one past the end: must stay untouched
    std::vector<float> back(size_t(N * C));
    double squares = 0;
    with_threads(threads, [&] {
      add_bias(y.data(), bias.data(), N, C);
      add_inplace(y.data(), x.data(), N * C);
      scale_inplace(y.data(), 0.75f, N * C);
      bias_backward(db.data(), y.data(), N, C);
      convert_f32_to_bf16(xb.data(), x.data(), N * C);
      convert_bf16_to_f32(back.data(), xb.data(), N * C);
      squares = sum_of_squares(y.data(), N * C - 5);
    });
    return std::tuple{y, db, xb, back, squares};
  };
  const auto [y1, db1, xb1, back1, sq1] = run(1);
  double reference = 0;
  for (int64_t i = 0; i < N * C - 5; ++i) reference += double(y1[size_t(i)]) * y1[size_t(i)];
  EXPECT_NEAR(sq1, reference, 1e-12 * reference);
  EXPECT_EQ(xb1.back().bits, 0x7fc1);
  for (int threads : {2, 3, 4}) {
    const auto [y, db, xb, back, sq] = run(threads);
    EXPECT_EQ(y, y1) << threads << " threads";
    EXPECT_EQ(db, db1) << threads << " threads";
    EXPECT_TRUE(std::equal(xb.begin(), xb.end(), xb1.begin(), [](bf16 a, bf16 b) { return a.bits == b.bits; }))
        << threads << " threads";
    EXPECT_EQ(back, back1) << threads << " threads";
    EXPECT_EQ(sq, sq1) << threads << " threads";
  }
}

}  // namespace
}  // namespace tensorpar
