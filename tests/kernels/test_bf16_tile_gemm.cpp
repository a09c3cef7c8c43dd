// The bf16 tile GEMM of the attention kernels against a double loop over the same bf16-rounded
// operands (the products of two bf16 values are exact in f32, so only the f32 summation differs:
// bounded by 1e-5 of sum |a b|), and its three packings against float_to_bf16 element by element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/kernels/bf16_tile_gemm.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using detail::bf16_pack_rows;
using detail::bf16_pack_vnni;
using detail::bf16_pack_vnni_transposed;
using testing::random_vector;

float rounded(float x) { return bf16_to_float(float_to_bf16(x)); }
float lower(uint32_t pair) { return bf16_to_float(bf16{uint16_t(pair & 0xffffu)}); }
float upper(uint32_t pair) { return bf16_to_float(bf16{uint16_t(pair >> 16)}); }
int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

TEST(Bf16TileGemm, PackingsRoundEachValueAndZeroThePadding) {
  const int64_t rows = 37, cols = 21, lds = 25;
  auto src = random_vector(size_t(rows * lds), 3, 4.0f);
  src[0] = 1.0f + 1.0f / 256;  // a tie: rounds to even (1.0)
  const int64_t pairs = (cols + 1) / 2;
  std::vector<uint32_t> r(size_t(rows * pairs), 0xdeadbeefu);
  bf16_pack_rows(r.data(), pairs, src.data(), lds, rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < 2 * pairs; ++c) {
      const uint32_t p = r[size_t(i * pairs + c / 2)];
      const float got = c % 2 ? upper(p) : lower(p);
      ASSERT_EQ(got, c < cols ? rounded(src[size_t(i * lds + c)]) : 0.0f) << "rows " << i << "," << c;
    }
  EXPECT_EQ(lower(r[0]), 1.0f);

  const int64_t ld = round16(cols);  // B = src: k = rows, n = cols
  std::vector<uint32_t> v(size_t((rows + 1) / 2 * ld), 0xdeadbeefu);
  bf16_pack_vnni(v.data(), ld, src.data(), lds, rows, cols);
  for (int64_t k = 0; k < rows + 1; ++k)
    for (int64_t j = 0; j < ld; ++j) {
      const uint32_t p = v[size_t(k / 2 * ld + j)];
      const float want = k < rows && j < cols ? rounded(src[size_t(k * lds + j)]) : 0.0f;
      ASSERT_EQ(k % 2 ? upper(p) : lower(p), want) << "vnni " << k << "," << j;
    }

  const int64_t ldt = round16(rows);  // B = src^T: k = cols, n = rows
  std::vector<uint32_t> t(size_t(pairs * ldt), 0xdeadbeefu);
  bf16_pack_vnni_transposed(t.data(), ldt, src.data(), lds, rows, cols);
  for (int64_t k = 0; k < 2 * pairs; ++k)
    for (int64_t j = 0; j < ldt; ++j) {
      const uint32_t p = t[size_t(k / 2 * ldt + j)];
      const float want = k < cols && j < rows ? rounded(src[size_t(j * lds + k)]) : 0.0f;
      ASSERT_EQ(k % 2 ? upper(p) : lower(p), want) << "transposed " << k << "," << j;
    }
}

struct TileCase {
  int64_t m, n, k;
  bool a_transposed;  // A given as the VNNI packing of A^T (as attention passes P^T and dS^T)
  float alpha, beta;
};

class Bf16TileGemmShapes : public ::testing::TestWithParam<TileCase> {};

TEST_P(Bf16TileGemmShapes, EqualsDoubleLoopOnTheRoundedOperands) {
  const TileCase c = GetParam();
  // A (m x k) and B (k x n) in f32; the kernel sees them rounded to bf16.
  const auto a = random_vector(size_t(c.m * c.k), uint32_t(c.m * 7 + c.k), 2.0f);
  const auto bm = random_vector(size_t(c.k * c.n), uint32_t(c.n * 5 + c.k), 2.0f);
  const int64_t pairs = (c.k + 1) / 2, ldb = round16(c.n) + 16;  // a wider ldb than needed is allowed
  std::vector<uint32_t> bp(size_t(pairs * ldb));
  bf16_pack_vnni(bp.data(), ldb, bm.data(), c.n, c.k, c.n);
  std::vector<uint32_t> ap;
  int64_t a_row, a_pair;
  if (c.a_transposed) {  // A^T (k x m) packed as a VNNI B operand: the pair (i, p) is at [p * ld + i]
    std::vector<float> at(size_t(c.k * c.m));
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t p = 0; p < c.k; ++p) at[size_t(p * c.m + i)] = a[size_t(i * c.k + p)];
    const int64_t ld = round16(c.m);
    ap.resize(size_t(pairs * ld));
    bf16_pack_vnni(ap.data(), ld, at.data(), c.m, c.k, c.m);
    a_row = 1;
    a_pair = ld;
  } else {
    const int64_t ld_pairs = pairs + 3;  // rows need not be contiguous
    ap.resize(size_t(c.m * ld_pairs));
    bf16_pack_rows(ap.data(), ld_pairs, a.data(), c.k, c.m, c.k);
    a_row = ld_pairs;
    a_pair = 1;
  }
  const int64_t ldc = c.n + 5;
  auto out = random_vector(size_t(c.m * ldc), 9);
  const auto before = out;
  detail::bf16_tile_gemm(c.m, c.n, c.k, c.alpha, ap.data(), a_row, a_pair, bp.data(), ldb, c.beta, out.data(), ldc);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = out[size_t(i * ldc + j)];
      if (j >= c.n) {
        ASSERT_EQ(got, before[size_t(i * ldc + j)]) << "wrote outside C at " << i << "," << j;
        continue;
      }
      double s = 0, mag = 0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double x = double(rounded(a[size_t(i * c.k + p)])) * rounded(bm[size_t(p * c.n + j)]);
        s += x;
        mag += std::fabs(x);
      }
      const double want = c.alpha * s + (c.beta != 0 ? c.beta * double(before[size_t(i * ldc + j)]) : 0.0);
      ASSERT_NEAR(got, want, 1e-5 * (std::fabs(c.alpha) * mag + std::fabs(c.beta)) + 1e-30)
          << "C[" << i << "," << j << "]";
    }
}

// Rows around the 6-row tile, columns around the 16-wide vectors and the 64-wide panel, odd k.
INSTANTIATE_TEST_SUITE_P(Shapes, Bf16TileGemmShapes,
                         ::testing::Values(TileCase{1, 1, 1, false, 1.0f, 0.0f}, TileCase{6, 16, 2, false, 1.0f, 0.0f},
                                           TileCase{7, 17, 3, false, 0.5f, 1.0f}, TileCase{13, 65, 64, false, 0.125f, 0.0f},
                                           TileCase{64, 256, 64, false, 0.125f, 0.0f},
                                           TileCase{64, 64, 255, false, 1.0f, 1.0f},
                                           TileCase{5, 130, 33, true, 1.0f, 1.0f},
                                           TileCase{256, 64, 64, true, 0.125f, 1.0f},
                                           TileCase{11, 48, 1, true, 2.0f, -0.5f}));

// The causal skips against the same GEMM without them: bit-identical wherever the result is needed
// (they drop only products with a zero factor), for offsets that put the diagonal before, inside and
// past the block, across tile and vector boundaries.
TEST(Bf16TileGemm, CausalSkipsGiveTheUnskippedResultBitForBit) {
  using Kind = detail::CausalSkip::Kind;
  const int64_t m = 45, n = 83, k = 67, pairs = (k + 1) / 2, ldb = round16(n), lda = round16(m), ldc = n + 3;
  const auto b = random_vector(size_t(k * n), 21, 2.0f);
  std::vector<uint32_t> bp(size_t(pairs * ldb));
  bf16_pack_vnni(bp.data(), ldb, b.data(), n, k, n);
  for (Kind kind : {Kind::OutputsFrom, Kind::ZeroKFrom, Kind::ZeroKBefore})
    for (int64_t offset : {-50, -7, 0, 1, 5, 16, 33, 70, 200}) {
      // A (m x k) with the zeros the skip assumes, as rows and as the VNNI packing of A^T.
      auto a = random_vector(size_t(m * k), uint32_t(offset + 100), 2.0f);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p)
          if ((kind == Kind::ZeroKFrom && p >= i + offset) || (kind == Kind::ZeroKBefore && p < i + offset))
            a[size_t(i * k + p)] = 0.0f;
      std::vector<float> at(size_t(k * m));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p) at[size_t(p * m + i)] = a[size_t(i * k + p)];
      std::vector<uint32_t> rows(size_t(m * pairs)), transposed(size_t(pairs * lda));
      bf16_pack_rows(rows.data(), pairs, a.data(), k, m, k);
      bf16_pack_vnni(transposed.data(), lda, at.data(), m, k, m);
      for (bool a_transposed : {false, true}) {
        const uint32_t* ap = a_transposed ? transposed.data() : rows.data();
        const int64_t a_row = a_transposed ? 1 : pairs, a_pair = a_transposed ? lda : 1;
        for (float beta : {0.0f, 1.0f}) {
          auto full = random_vector(size_t(m * ldc), 5);
          auto skipped = full;
          detail::bf16_tile_gemm(m, n, k, 0.5f, ap, a_row, a_pair, bp.data(), ldb, beta, full.data(), ldc);
          detail::bf16_tile_gemm(m, n, k, 0.5f, ap, a_row, a_pair, bp.data(), ldb, beta, skipped.data(), ldc,
                                 {kind, offset});
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const bool needed = j >= n || kind != Kind::OutputsFrom || j < i + offset;
              if (!needed) continue;
              ASSERT_EQ(skipped[size_t(i * ldc + j)], full[size_t(i * ldc + j)])
                  << "kind " << int(kind) << " offset " << offset << " A^T " << a_transposed << " beta " << beta
                  << " at " << i << "," << j;
            }
        }
      }
    }
}

}  // namespace
}  // namespace tensorpar
