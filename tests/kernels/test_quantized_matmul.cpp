// Blockwise-quantized matmul (Q8_0 / Q4_0 weights, Q8_0 activations): the AVX-512 VNNI kernel
// against the scalar reference (exact where every product is an exactly representable integer sum),
// and against the f32 product within the bound the quantization step gives.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/quantized_matmul.hpp"

namespace tensorpar {
namespace {

std::vector<float> normal(int64_t n, uint64_t seed, float std = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(g);
  return v;
}

class QuantizedMatmul : public ::testing::TestWithParam<WeightFormat> {};

// Integer-valued weights and activations whose every block holds its extreme (Int8: ±127 with
// |q| <= 127; Int4: -8 with q in [-8, 7]; activations: 127) quantize with scale exactly 1, so the
// product is an integer sum below 2^24 that both kernels must reproduce bit for bit: this checks the
// integer dot products (nibble unpacking, sign handling, block pairing, an odd last block) exactly.
TEST_P(QuantizedMatmul, IntegerPartIsExact) {
  const WeightFormat f = GetParam();
  const int64_t M = 3, N = 37, K = 32 * 5;  // odd block count: exercises the tail block
  std::mt19937 g(7);
  const int lo = f == WeightFormat::Int8 ? -127 : -8, hi = f == WeightFormat::Int8 ? 127 : 7;
  std::uniform_int_distribution<int> wdist(lo, hi), xdist(-127, 127);
  std::vector<float> w(size_t(N * K)), x(size_t(M * K));
  for (float& v : w) v = float(wdist(g));
  for (float& v : x) v = float(xdist(g));
  for (int64_t b = 0; b < N * K / 32; ++b) w[size_t(b * 32 + b % 32)] = float(lo);  // the block's scale is 1
  for (int64_t b = 0; b < M * K / 32; ++b) x[size_t(b * 32 + (b * 7) % 32)] = 127.0f;
  const QuantizedWeight q = quantize_weight(f, w.data(), N, K);
  for (float s : q.scales) ASSERT_EQ(s, f == WeightFormat::Int8 ? -float(lo) / 127.0f : 1.0f);
  std::vector<float> deq(size_t(N * K));
  dequantize_weight(deq.data(), q);
  ASSERT_EQ(deq, w) << "integer weights must survive quantization";
  std::vector<float> fast(size_t(M * N)), ref(size_t(M * N));
  quantized_matmul(fast.data(), x.data(), K, q, M);
  quantized_matmul_reference(ref.data(), x.data(), K, q, M);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0;
      for (int64_t k = 0; k < K; ++k) exact += double(x[size_t(m * K + k)]) * double(w[size_t(n * K + k)]);
      ASSERT_EQ(ref[size_t(m * N + n)], float(exact)) << "reference at " << m << "," << n;
      ASSERT_EQ(fast[size_t(m * N + n)], float(exact)) << "vnni=" << quantized_matmul_has_vnni() << " at " << m
                                                       << "," << n;
    }
}

// Random f32 data, odd shapes. Against the f32 product y = Σ_k x_k w_k:
//   x w - x̂ ŵ = x (w - ŵ) + ŵ (x - x̂), so |y - ŷ| <= Σ_k |x_k| e_w(k) + |ŵ_k| e_x(k)
// with e_x = d_x / 2 (Q8_0 rounds to nearest), e_w = d_w / 2 for Int8 and d_w for Int4 (the element
// at the far end from the block's extreme can be clamped from nibble 16 to 15), plus f32 summation
// rounding, bounded by 4 K eps Σ|x||w|. The AVX-512 kernel differs from the reference only in the
// order the per-block terms are added: |fast - ref| <= 2 (K/32) eps Σ_b |d_w d_x dot_b|, bounded here by
// the same 4 K eps Σ|x̂||ŵ| term.
TEST_P(QuantizedMatmul, WithinQuantizationBoundOfF32) {
  const WeightFormat f = GetParam();
  const float eps = 1.2e-7f;
  for (const auto& [M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 32}, {1, 53, 96}, {4, 129, 320}, {7, 33, 1024}}) {
    const int64_t ld = K + 5;  // a row stride wider than K (the row-parallel layer reads its columns in place)
    const std::vector<float> w = normal(N * K, 11 + N), x = normal(M * ld, 13 + M, 2.0f);
    const QuantizedWeight q = quantize_weight(f, w.data(), N, K);
    ASSERT_EQ(q.bytes(), N * K / 32 * 4 + (f == WeightFormat::Int8 ? N * K : N * K / 2));
    std::vector<float> wq(size_t(N * K));
    dequantize_weight(wq.data(), q);
    std::vector<int8_t> xq(static_cast<size_t>(K));
    std::vector<float> xd(size_t(K / 32));
    std::vector<float> fast(size_t(M * N)), ref(size_t(M * N));
    quantized_matmul(fast.data(), x.data(), ld, q, M);
    quantized_matmul_reference(ref.data(), x.data(), ld, q, M);
    double worst = 0;
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x.data() + m * ld;
      quantize_activations(xq.data(), xd.data(), xr, ld, 1, K);
      for (int64_t n = 0; n < N; ++n) {
        double y = 0, bound = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t b = k / 32;
          const double dw = std::fabs(q.scales[size_t(n * (K / 32) + b)]);
          const double ew = f == WeightFormat::Int8 ? dw / 2 : dw, ex = xd[size_t(b)] / 2.0;
          const double wk = w[size_t(n * K + k)], wqk = wq[size_t(n * K + k)];
          y += double(xr[k]) * wk;
          bound += std::fabs(xr[k]) * ew * (1 + 1e-6) + std::fabs(wqk) * ex * (1 + 1e-6);
          mag += std::fabs(xr[k]) * (std::fabs(wk) + ew);
        }
        bound += 4.0 * double(K) * eps * mag;
        const double got = ref[size_t(m * N + n)];
        ASSERT_LE(std::fabs(got - y), bound) << "reference " << weight_format_name(f) << " M=" << M << " N=" << N
                                              << " K=" << K << " at " << m << "," << n;
        ASSERT_LE(std::fabs(fast[size_t(m * N + n)] - got), 4.0 * double(K) * eps * mag)
            << "AVX-512 vs reference at " << m << "," << n;
        worst = std::max(worst, std::fabs(got - y) / bound);
      }
    }
    // the bound must not be vacuous: the error uses a visible part of it
    EXPECT_GT(worst, 0.002) << weight_format_name(f) << " M=" << M << " N=" << N << " K=" << K;
  }
}

TEST_P(QuantizedMatmul, RefusesKNotMultipleOf32) {
  const std::vector<float> w(size_t(4 * 48), 1.0f);
  EXPECT_THROW(quantize_weight(GetParam(), w.data(), 4, 48), ShapeError);
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedMatmul, ::testing::Values(WeightFormat::Int8, WeightFormat::Int4),
                         [](const auto& info) { return std::string(weight_format_name(info.param)); });

TEST(WeightFormat, Parses) {
  EXPECT_EQ(parse_weight_format("int4"), WeightFormat::Int4);
  EXPECT_EQ(parse_weight_format("int8"), WeightFormat::Int8);
  EXPECT_EQ(parse_weight_format("f32"), WeightFormat::F32);
  EXPECT_THROW(parse_weight_format("q4"), ConfigError);
}

}  // namespace
}  // namespace tensorpar
