// Decode GEMV (kernels/gemv.hpp) against the f64 reference and against the existing f32 path
// (gemm(), oneDNN sgemm), over odd shapes, strides wider than the rows, and sentinels beyond each
// output row (nothing outside y (M, N) may be written).
//
// Error bound: y = Σ_k x_k w_k in f32. The AVX-512 kernel sums each lane's terms in sequence
// (K/32 fused multiply-adds per accumulator, two accumulators at M = 1, plus masked tail steps),
// adds the accumulators and reduces 16 lanes in 4 steps: at most n = K/16 + 8 roundings on any path,
// so |y - exact| <= n u Σ|x_k w_k| (u = 2^-24, first-order γ_n). The AVX2 kernel (8 lanes, four
// or two accumulators, one masked tail step per accumulator at most, 3 adds, 3 reduction steps) has
// at most K/32 + 7 (M = 1) or K/16 + 5 (M > 1): within the same n. oneDNN's order is its own; its
// worst case is n = K. Against gemm() the bound is the sum of the two.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemv.hpp"

namespace tensorpar {
namespace {

constexpr float kSentinel = -12345.0f;
constexpr double kUnit = 1.0 / double(1 << 24);

std::vector<float> normal(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

struct Shape {
  int64_t M, N, K;
};

class Gemv : public ::testing::TestWithParam<Shape> {};

TEST_P(Gemv, WithinRoundingBoundOfExactAndOfGemm) {
  const auto [M, N, K] = GetParam();
  const int64_t ldx = K + 3, ldw = K + 5, ldy = N + 2;  // strides wider than the rows
  const std::vector<float> x = normal(size_t(M * ldx), 1 + M), w = normal(size_t(N * ldw), 2 + K);
  std::vector<float> y(size_t(M * ldy), kSentinel), exact(size_t(M * ldy), kSentinel);
  gemv_f32(y.data(), ldy, x.data(), ldx, w.data(), ldw, M, N, K);
  gemv_f32_reference(exact.data(), ldy, x.data(), ldx, w.data(), ldw, M, N, K);
  // the existing f32 path: gemm with B transposed, as the linears call it
  std::vector<float> via_gemm(size_t(M * ldy), kSentinel);
  {
    // gemm() may route these shapes to gemv_f32 itself; oneDNN is compared through a copy with M + 4
    // rows (never routed), whose first M rows are the product wanted
    std::vector<float> x_big(size_t((M + kGemvMaxRows) * ldx), 0.0f), y_big(size_t((M + kGemvMaxRows) * ldy));
    std::copy(x.begin(), x.end(), x_big.begin());
    gemm(Trans::No, Trans::Yes, M + kGemvMaxRows, N, K, 1.0f, x_big.data(), ldx, w.data(), ldw, 0.0f, y_big.data(),
         ldy);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) via_gemm[size_t(m * ldy + n)] = y_big[size_t(m * ldy + n)];
  }
  const double n_ours = double(K) / 16 + 8, n_gemm = double(K);
  double worst = 0;  // largest error as a fraction of its bound
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double abs_sum = 0;
      for (int64_t k = 0; k < K; ++k) abs_sum += std::fabs(double(x[size_t(m * ldx + k)]) * w[size_t(n * ldw + k)]);
      const size_t i = size_t(m * ldy + n);
      const double bound = n_ours * kUnit * abs_sum;
      ASSERT_LE(std::fabs(double(y[i]) - exact[i]), bound) << "m " << m << " n " << n;
      ASSERT_LE(std::fabs(double(y[i]) - via_gemm[i]), bound + n_gemm * kUnit * abs_sum) << "m " << m << " n " << n;
      if (bound > 0) worst = std::max(worst, std::fabs(double(y[i]) - exact[i]) / bound);
    }
    for (int64_t n = N; n < ldy; ++n) ASSERT_EQ(y[size_t(m * ldy + n)], kSentinel) << "wrote past row " << m;
  }
  std::printf("[ info ] M=%lld N=%lld K=%lld: worst error %.2f of the bound (kernel: %s)\n", (long long)M,
              (long long)N, (long long)K, worst,
              gemv_has_avx512() ? "AVX-512" : (gemv_has_avx2() ? "AVX2" : "reference"));
}

INSTANTIATE_TEST_SUITE_P(Shapes, Gemv,
                         ::testing::Values(Shape{1, 1, 1}, Shape{1, 5, 15}, Shape{1, 33, 16}, Shape{1, 7, 17},
                                           Shape{1, 130, 33}, Shape{1, 64, 1024}, Shape{1, 9, 2816}, Shape{2, 37, 100},
                                           Shape{3, 5, 64}, Shape{4, 131, 257}, Shape{4, 3, 1024}),
                         [](const auto& info) {
                           return "M" + std::to_string(info.param.M) + "N" + std::to_string(info.param.N) + "K" +
                                  std::to_string(info.param.K);
                         });

// gemm() hands the decode shapes (M <= 4, B transposed, alpha 1, beta 0) to gemv_f32: bit-identical.
// M = 2: on a CPU without AVX-512, M = 1 stays with oneDNN (gemm.cpp).
TEST(GemvDispatch, GemmRoutesDecodeShapesHere) {
  const int64_t M = 2, N = 300, K = 1024;
  const std::vector<float> x = normal(size_t(M * K), 5), w = normal(size_t(N * K), 6);
  std::vector<float> a(static_cast<size_t>(M * N)), b(static_cast<size_t>(M * N));
  gemm(Trans::No, Trans::Yes, M, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, a.data(), N);
  gemv_f32(b.data(), N, x.data(), K, w.data(), K, M, N, K);
  EXPECT_EQ(a, b);
}

TEST(GemvDispatch, RefusesMoreRowsThanItHandles) {
  std::vector<float> x(8), w(8), y(8);
  EXPECT_THROW(gemv_f32(y.data(), 1, x.data(), 1, w.data(), 1, kGemvMaxRows + 1, 1, 1), ShapeError);
  EXPECT_THROW(gemv_f32(y.data(), 1, x.data(), 1, w.data(), 2, 1, 1, 2), ShapeError);  // ldx < K
}

}  // namespace
}  // namespace tensorpar
