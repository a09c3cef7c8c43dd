// The linear layers' bf16 panel GEMM (bf16_panel_gemm.hpp), with A in both of its forms: its
// three packings against the pair layouts' definitions word by word, its products against a double
// loop over the same bf16 operands (products of two bf16 are exact in f32, so only the f32 summation
// differs: (k + 2) 2^-24 of the sum of |terms|, far below one bf16 rounding), at sizes off its tiles,
// panels and row blocks, with and without bias and accumulation; and its result bit-identical for 1,
// 2 and 3 threads (the panels or the rows split between them).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/kernels/bf16_panel_gemm.hpp"
#include "tensorpar/kernels/bf16_tile_gemm.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using detail::kPanelColumns;

std::vector<bf16> random_bf16(size_t n, uint32_t seed) {
  const auto f = testing::random_vector(n, seed);
  std::vector<bf16> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(f[i]);
  return out;
}

uint32_t pair_bits(bf16 lo, bf16 hi) { return uint32_t(lo.bits) | uint32_t(hi.bits) << 16; }

// Panel word of pair p, column j, for k x n packed in panels.
size_t panel_index(int64_t k, int64_t p, int64_t j) {
  const int64_t kp = (k + 1) / 2;
  return size_t(j / kPanelColumns * kp * kPanelColumns + p * kPanelColumns + j % kPanelColumns);
}

// A CPU feature, not an environment CI can provide (TENSORPAR_SKIP_OR_FAIL): on an AVX2-only CPU
// nothing calls these kernels (the bf16 GEMMs widen to f32 there, tested in test_gemm_bf16.cpp).
#define REQUIRE_AVX512_BF16() \
  if (!detail::bf16_tile_gemm_supported()) GTEST_SKIP() << "this CPU has no AVX512-BF16"

TEST(Bf16PanelGemm, PackingsPlaceEveryPairAndZeroThePadding) {
  REQUIRE_AVX512_BF16();
  const bf16 zero{};
  for (int64_t k : {1, 6, 7, 33, 40})
    for (int64_t n : {1, 16, 63, 64, 70, 130}) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << " n=" << n);
      const int64_t kp = (k + 1) / 2, size = detail::bf16_panels_size(k, n);
      ASSERT_EQ(size, (n + 63) / 64 * 64 * kp);
      const int64_t ld = n + 3, ldt = k + 3;
      const auto src = random_bf16(size_t(k * ld), uint32_t(k * 131 + n));  // k x n
      const auto srct = random_bf16(size_t(n * ldt), uint32_t(k * 7 + n));  // n x k, B = srct^T
      std::vector<uint32_t> panels(size_t(size), 0xdeadbeefu), transposed(size_t(size), 0xdeadbeefu);
      detail::bf16_pack_panels(panels.data(), src.data(), ld, k, n);
      detail::bf16_pack_panels_transposed(transposed.data(), srct.data(), ldt, k, n);
      for (int64_t p = 0; p < kp; ++p)
        for (int64_t j = 0; j < (n + 63) / 64 * 64; ++j) {
          const bool in = j < n, odd = 2 * p + 1 < k;
          const uint32_t want =
              in ? pair_bits(src[size_t(2 * p * ld + j)], odd ? src[size_t((2 * p + 1) * ld + j)] : zero) : 0u;
          const uint32_t want_t =
              in ? pair_bits(srct[size_t(j * ldt + 2 * p)], odd ? srct[size_t(j * ldt + 2 * p + 1)] : zero) : 0u;
          ASSERT_EQ(panels[panel_index(k, p, j)], want) << "panels, pair " << p << " column " << j;
          ASSERT_EQ(transposed[panel_index(k, p, j)], want_t) << "transposed, pair " << p << " column " << j;
        }
      std::vector<uint32_t> pairs(size_t(kp * n + 5), 0xdeadbeefu);  // A = src^T: m = n columns of src
      detail::bf16_pack_pairs(pairs.data(), src.data(), ld, k, n);
      for (int64_t p = 0; p < kp; ++p)
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(pairs[size_t(p * n + i)],
                    pair_bits(src[size_t(2 * p * ld + i)], 2 * p + 1 < k ? src[size_t((2 * p + 1) * ld + i)] : zero))
              << "pairs, pair " << p << " row " << i;
      for (size_t i = size_t(kp * n); i < pairs.size(); ++i) ASSERT_EQ(pairs[i], 0xdeadbeefu) << "overrun at " << i;
    }
}

// A row-major, or A = src^T packed by bf16_pack_pairs (a weight gradient's dY^T).
enum class ALayout { Rows, Pairs };

// One pass from the f32 weight gives the words of rounding it first and packing each layout from the
// bf16 copy, at sizes off the 16 x 32 blocks and the 64-column panels.
TEST(Bf16PanelGemm, WeightPackedInOnePassEqualsRoundingThenPackingEach) {
  REQUIRE_AVX512_BF16();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2, 2}, {16, 32}, {18, 34}, {96, 80}, {130, 66}, {64, 192}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << rows << " cols=" << cols);
    auto w = testing::random_vector(size_t(rows * cols), uint32_t(rows + cols), 3.0f);
    w[0] = 1.0f + 1.0f / 256;  // a tie: rounds to even
    std::vector<bf16> wb(w.size());
    for (size_t i = 0; i < w.size(); ++i) wb[i] = float_to_bf16(w[i]);
    std::vector<uint32_t> fwd(size_t(detail::bf16_panels_size(cols, rows)), 0xdeadbeefu), fwd_ref(fwd);
    std::vector<uint32_t> back(size_t(detail::bf16_panels_size(rows, cols)), 0xdeadbeefu), back_ref(back);
    detail::bf16_pack_weight_panels(fwd.data(), back.data(), w.data(), rows, cols);
    detail::bf16_pack_panels_transposed(fwd_ref.data(), wb.data(), cols, cols, rows);
    detail::bf16_pack_panels(back_ref.data(), wb.data(), cols, rows, cols);
    EXPECT_EQ(fwd, fwd_ref) << "forward layout (B = W^T)";
    EXPECT_EQ(back, back_ref) << "backward layout (B = W)";
  }
}

struct Problem {
  int64_t m, n, k;
  ALayout a_layout;
  bool bias;
  float beta;
};

// Runs the panel GEMM on random operands; returns C (m x ldc) and, via ref/mag, the exact result.
std::vector<float> run(const Problem& g, int64_t ldc, std::vector<double>* ref = nullptr,
                       std::vector<double>* mag = nullptr) {
  const int64_t kp = (g.k + 1) / 2, k_even = 2 * kp;
  // A's bf16 values: row-major m x k_even (odd k: a zero last column), or src k x m for the transposed.
  const auto a_src = random_bf16(size_t(g.m * k_even), 21);
  std::vector<bf16> a_rows(a_src);
  if (g.k % 2)
    for (int64_t i = 0; i < g.m; ++i) a_rows[size_t(i * k_even + g.k)] = bf16{};
  std::vector<uint32_t> a_pairs(size_t(kp * g.m));
  std::vector<bf16> a_t(size_t(g.k * g.m));  // k x m, A = a_t^T
  for (int64_t kk = 0; kk < g.k; ++kk)
    for (int64_t i = 0; i < g.m; ++i) a_t[size_t(kk * g.m + i)] = a_rows[size_t(i * k_even + kk)];
  if (g.a_layout == ALayout::Pairs) detail::bf16_pack_pairs(a_pairs.data(), a_t.data(), g.m, g.k, g.m);
  const auto b = random_bf16(size_t(g.k * g.n), 22);  // k x n
  std::vector<uint32_t> b_panels(size_t(detail::bf16_panels_size(g.k, g.n)));
  detail::bf16_pack_panels(b_panels.data(), b.data(), g.n, g.k, g.n);
  const auto bias = testing::random_vector(size_t(g.n), 23);
  std::vector<float> c = testing::random_vector(size_t(g.m * ldc), 24);
  if (g.beta == 0.0f)
    for (int64_t i = 0; i < g.m; ++i) c[size_t(i * ldc)] = std::numeric_limits<float>::quiet_NaN();
  if (ref) {
    ref->assign(size_t(g.m * g.n), 0.0);
    mag->assign(size_t(g.m * g.n), 0.0);
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        double s = 0, a = 0;
        for (int64_t kk = 0; kk < g.k; ++kk) {
          const double t =
              double(bf16_to_float(a_rows[size_t(i * k_even + kk)])) * bf16_to_float(b[size_t(kk * g.n + j)]);
          s += t;
          a += std::fabs(t);
        }
        const double extra =
            (g.bias ? double(bias[size_t(j)]) : 0.0) + (g.beta != 0.0f ? double(g.beta) * c[size_t(i * ldc + j)] : 0.0);
        (*ref)[size_t(i * g.n + j)] = s + extra;
        (*mag)[size_t(i * g.n + j)] = a + std::fabs(extra);
      }
  }
  if (g.a_layout == ALayout::Pairs)
    detail::bf16_panel_gemm(g.m, g.n, g.k, a_pairs.data(), 1, g.m, b_panels.data(), g.bias ? bias.data() : nullptr,
                            g.beta, c.data(), ldc);
  else
    detail::bf16_panel_gemm(g.m, g.n, g.k, reinterpret_cast<const uint32_t*>(a_rows.data()), kp, 1, b_panels.data(),
                            g.bias ? bias.data() : nullptr, g.beta, c.data(), ldc);
  return c;
}

TEST(Bf16PanelGemm, EqualsExactProductsUpToF32Summation) {
  REQUIRE_AVX512_BF16();
  const double u = std::ldexp(1.0, -24);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                         {5, 17, 7},
                         {6, 64, 64},
                         {25, 65, 130},
                         {70, 130, 513},
                         {13, 200, 2},
                         {49, 128, 0}})
    for (ALayout layout : {ALayout::Rows, ALayout::Pairs})
      for (bool bias : {false, true})
        for (float beta : {0.0f, 1.0f}) {
          const Problem g{m, n, k, layout, bias, beta};
          SCOPED_TRACE(::testing::Message() << "m=" << m << " n=" << n << " k=" << k << " A layout=" << int(layout)
                                            << " bias=" << bias << " beta=" << beta);
          const int64_t ldc = n + 7;
          std::vector<double> ref, mag;
          const auto c = run(g, ldc, &ref, &mag);
          const auto untouched = testing::random_vector(size_t(m * ldc), 24);  // C's start: the padding stays
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const float got = c[size_t(i * ldc + j)];
              if (j >= n) {
                ASSERT_EQ(got, untouched[size_t(i * ldc + j)]) << "padding of C written at " << i << "," << j;
                continue;
              }
              const double want = ref[size_t(i * n + j)], tol = double(k + 2) * u * mag[size_t(i * n + j)] + 1e-30;
              ASSERT_LE(std::fabs(got - want), tol) << "C[" << i << "," << j << "] = " << got << ", exact " << want;
            }
        }
}

TEST(Bf16PanelGemm, BitIdenticalForOneTwoAndThreeThreads) {
  REQUIRE_AVX512_BF16();
  const int saved = omp_get_max_threads();
  // 9 panels split by panels; a single panel split by rows; both large enough to fork threads.
  for (const Problem& g :
       {Problem{300, 520, 128, ALayout::Rows, true, 0.0f}, Problem{602, 64, 256, ALayout::Pairs, false, 1.0f}}) {
    SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k);
    omp_set_num_threads(1);
    const auto one = run(g, g.n);
    for (int threads : {2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_EQ(run(g, g.n), one) << threads << " threads";
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace tensorpar
