// gemm_bf16 against a naive double loop on the same bf16-rounded inputs: the products of two bf16
// are exact in f32, so only the f32 summation order differs and the bound is tight. Also the
// primitive cache and the f32 <-> bf16 conversions (ties to even, Inf/NaN, tails, overruns).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/kernels/matmul.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

std::vector<bf16> random_bf16(size_t n, uint32_t seed) {
  const auto f = testing::random_vector(n, seed);
  std::vector<bf16> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(f[i]);
  return out;
}

struct Bf16Case {
  Trans ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

void run_case(const Bf16Case& g) {
  SCOPED_TRACE(::testing::Message() << "ta=" << int(g.ta) << " tb=" << int(g.tb) << " M=" << g.M << " N=" << g.N
                                    << " K=" << g.K << " alpha=" << g.alpha << " beta=" << g.beta);
  const int64_t a_rows = g.ta == Trans::Yes ? g.K : g.M, a_cols = g.ta == Trans::Yes ? g.M : g.K;
  const int64_t b_rows = g.tb == Trans::Yes ? g.N : g.K, b_cols = g.tb == Trans::Yes ? g.K : g.N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = g.N + 7;
  const auto A = random_bf16(size_t(a_rows * lda), 11);
  const auto B = random_bf16(size_t(b_rows * ldb), 12);
  auto C = testing::random_vector(size_t(g.M * ldc), 13);
  const float sentinel = -777.0f;
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = g.N; j < ldc; ++j) C[size_t(i * ldc + j)] = sentinel;
  if (g.beta == 0)
    for (int64_t i = 0; i < g.M; ++i) C[size_t(i * ldc)] = std::numeric_limits<float>::quiet_NaN();

  std::vector<double> ref(size_t(g.M * g.N)), mag(size_t(g.M * g.N));
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        const double a = bf16_to_float(g.ta == Trans::Yes ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)]);
        const double b = bf16_to_float(g.tb == Trans::Yes ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)]);
        s += a * b;
        m += std::fabs(a * b);
      }
      const double c = g.beta == 0 ? 0.0 : double(g.beta) * C[size_t(i * ldc + j)];
      ref[size_t(i * g.N + j)] = g.alpha * s + c;
      mag[size_t(i * g.N + j)] = std::fabs(g.alpha) * m + std::fabs(c);
    }

  gemm_bf16(g.ta, g.tb, g.M, g.N, g.K, g.alpha, A.data(), lda, B.data(), ldb, g.beta, C.data(), ldc);

  // Exact products, f32 sums: |err| <= (K+2) 2^-24 sum|terms|. Had the kernel rounded anything to
  // bf16 again (2^-9 relative) this would fail by orders of magnitude.
  const double u = std::ldexp(1.0, -24);
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = C[size_t(i * ldc + j)];
      if (j >= g.N) {
        if (got != sentinel && bad++ == 0) ADD_FAILURE() << "padding of C overwritten at row " << i << " col " << j;
        continue;
      }
      const double want = ref[size_t(i * g.N + j)], tol = double(g.K + 2) * u * mag[size_t(i * g.N + j)] + 1e-30;
      const double err = std::fabs(got - want);
      worst = std::max(worst, err / tol);
      if (!(err <= tol) && bad++ == 0)
        ADD_FAILURE() << "first bad C[" << i << "," << j << "] = " << got << ", expected " << want << " (tol " << tol
                      << ")";
    }
  EXPECT_EQ(bad, 0) << "bad elements; worst error / bound = " << worst;
}

TEST(GemmBf16, AllTransposesLeadingDimsAndBeta) {
  for (Trans ta : {Trans::No, Trans::Yes})
    for (Trans tb : {Trans::No, Trans::Yes})
      for (float beta : {0.0f, 1.0f}) {
        run_case({ta, tb, 37, 29, 53, 1.0f, beta});
        run_case({ta, tb, 96, 160, 257, 1.0f, beta});
      }
}

TEST(GemmBf16, AlphaAndGeneralBeta) {
  run_case({Trans::No, Trans::Yes, 33, 17, 65, 0.5f, 0.0f});
  run_case({Trans::Yes, Trans::No, 33, 17, 65, -2.0f, 0.25f});
}

TEST(GemmBf16, PrimitiveIsCachedPerProblem) {
  const int64_t M = 19, N = 23, K = 31;
  const auto A = random_bf16(size_t(M * K), 1), B = random_bf16(size_t(K * N), 2);
  std::vector<float> C(size_t(M * N));
  gemm_bf16(Trans::No, Trans::No, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  const int64_t after_first = gemm_bf16_cache_size();
  for (int rep = 0; rep < 3; ++rep)
    gemm_bf16(Trans::No, Trans::No, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  EXPECT_EQ(gemm_bf16_cache_size(), after_first);
  gemm_bf16(Trans::No, Trans::No, M, N, K, 1.0f, A.data(), K, B.data(), N, 1.0f, C.data(), N);  // new beta
  if (!gemm_bf16_native()) {  // widened to f32 (an AVX2-only CPU): no oneDNN bf16 primitive at all
    EXPECT_EQ(gemm_bf16_cache_size(), 0);
    EXPECT_NE(gemm_bf16_impl_name(Trans::No, Trans::No, M, N, K, K, N, N).find("widened to f32"), std::string::npos);
    return;
  }
  EXPECT_EQ(gemm_bf16_cache_size(), after_first + 1);
}

// With AVX512-BF16 gemm_bf16 is oneDNN's bf16 matmul, not the f32 widening; without AVX-512 (Debian
// 12's oneDNN 2.7 has no bf16 matmul for AVX2) it is the widening. This machine's CPU decides which
// path the rest of this file tests; this checks it is the right one and names it.
TEST(GemmBf16, UsesOneDnnBf16WhereTheCpuHasIt) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) {
    EXPECT_TRUE(gemm_bf16_native());
  }
  if (!__builtin_cpu_supports("avx512f")) {
    EXPECT_FALSE(gemm_bf16_native());
  }
  RecordProperty("gemm_bf16", gemm_bf16_impl_name(Trans::No, Trans::No, 8, 8, 8, 8, 8, 8));
}

TEST(GemmBf16, RejectsShortLeadingDimension) {
  std::vector<bf16> A(64), B(64);
  std::vector<float> C(64);
  EXPECT_THROW(gemm_bf16(Trans::No, Trans::No, 4, 4, 8, 1.0f, A.data(), 7, B.data(), 4, 0.0f, C.data(), 4),
               ShapeError);
}

uint16_t to_bits(float f) {
  bf16 out;
  convert_f32_to_bf16(&out, &f, 1);
  return out.bits;
}

TEST(ConvertBf16, TiesToEvenAndSpecials) {
  struct C {
    uint32_t in;
    uint16_t out;
  };
  const C cases[] = {
      {0x3f808000u, 0x3f80},  // 1 + 2^-8: halfway, lower neighbour even -> down
      {0x3f818000u, 0x3f82},  // halfway, upper neighbour even -> up
      {0x3f808001u, 0x3f81},  // just above halfway -> up
      {0x3f807fffu, 0x3f80},  // just below halfway -> down
      {0xbf818000u, 0xbf82},  // negative tie -> even, magnitude up
      {0x7f7fffffu, 0x7f80},  // FLT_MAX rounds to +Inf
      {0x7f800000u, 0x7f80},  // +Inf
      {0xff800000u, 0xff80},  // -Inf
      {0x7fc00000u, 0x7fc0},  // quiet NaN
      {0x7f800001u, 0x7fc0},  // signalling NaN is quieted, not rounded to Inf
      {0x80000000u, 0x8000},  // -0
  };
  for (const C& c : cases) {
    const float f = std::bit_cast<float>(c.in);
    EXPECT_EQ(to_bits(f), c.out) << std::hex << "input 0x" << c.in;
    EXPECT_EQ(float_to_bf16(f).bits, c.out) << std::hex << "scalar, input 0x" << c.in;
  }
}

TEST(ConvertBf16, DenormalsKeptOrFlushedToSignedZero) {
  // Documented difference: vcvtneps2bf16 flushes f32 denormals; the scalar path keeps them.
  for (uint32_t in : {0x00400000u, 0x80400000u}) {
    const uint16_t got = to_bits(std::bit_cast<float>(in)), scalar = float_to_bf16(std::bit_cast<float>(in)).bits;
    EXPECT_TRUE(got == scalar || got == uint16_t(in >> 16 & 0x8000)) << std::hex << got << " for 0x" << in;
  }
}

TEST(ConvertBf16, MatchesScalarOnAllLengthsWithoutOverrun) {
  for (int64_t n : {1, 7, 15, 16, 17, 31, 32, 33, 63, 100, 1000}) {
    auto src = testing::random_vector(size_t(n), uint32_t(n), 1000.0f);
    std::vector<bf16> dst(size_t(n) + 4, bf16{0xabcd});
    convert_f32_to_bf16(dst.data(), src.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(dst[size_t(i)].bits, float_to_bf16(src[size_t(i)]).bits) << "n=" << n << " first bad index " << i;
    for (size_t i = size_t(n); i < dst.size(); ++i) ASSERT_EQ(dst[i].bits, 0xabcd) << "overrun at " << i;

    std::vector<float> back(size_t(n) + 4, -1.0f);
    convert_bf16_to_f32(back.data(), dst.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[size_t(i)], bf16_to_float(dst[size_t(i)])) << "index " << i;
    for (size_t i = size_t(n); i < back.size(); ++i) ASSERT_EQ(back[i], -1.0f) << "overrun at " << i;
  }
}

}  // namespace
}  // namespace tensorpar

namespace tensorpar {
namespace {

// The pre-packed weight path equals gemm_bf16 (oneDNN) on the same rounded weight, bit for bit, for
// both GEMMs of a linear layer: with AVX512-BF16 and an even K it is our panel GEMM, which like
// oneDNN's brgemm at these sizes sums each output's pairs in k order in one f32 accumulator; with an
// odd K (the second shape) it is oneDNN's pre-packed matmul. With the bias added inside the forward
// GEMM it equals the sum added after it; after the weight changes, load() packs the new values;
// another token count takes the plain path.
TEST(Bf16Weight, PackedGemmsEqualPlainGemmBf16AndFollowTheWeight) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{96, 80}, {95, 81}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << rows << " cols=" << cols);
    const int64_t tokens = 70;  // sizes off the kernels' blocks on purpose
    auto w = testing::random_vector(size_t(rows * cols), 31);
    const auto x = random_bf16(size_t(tokens * cols), 32), dy = random_bf16(size_t(tokens * rows), 33);
    const auto bias = testing::random_vector(size_t(rows), 34);
    Bf16Weight weight(rows, cols, tokens), biased(rows, cols, tokens, /*fused_bias=*/true);
    for (int version = 0; version < 2; ++version) {
      if (version == 1)
        for (float& v : w) v = -2.0f * v + 0.25f;
      std::vector<bf16> wb(w.size());
      convert_f32_to_bf16(wb.data(), w.data(), int64_t(w.size()));
      for (int64_t n : {tokens, int64_t(13)}) {  // packed, then plain
        SCOPED_TRACE(::testing::Message() << "weight version " << version << ", " << n << " tokens");
        weight.load(w.data(), n);
        biased.load(w.data(), n);
        std::vector<float> y(size_t(n * rows)), y_ref(y.size()), dx(size_t(n * cols)), dx_ref(dx.size());
        std::vector<float> yb(y.size()), yb_ref(y.size());
        weight.forward(x.data(), n, y.data());
        gemm_bf16(Trans::No, Trans::Yes, n, rows, cols, 1.0f, x.data(), cols, wb.data(), cols, 0.0f, y_ref.data(),
                  rows);
        biased.forward(x.data(), n, yb.data(), bias.data());  // the bias inside the packed GEMM: y + bias
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < rows; ++j)
            yb_ref[size_t(i * rows + j)] = y_ref[size_t(i * rows + j)] + bias[size_t(j)];
        EXPECT_EQ(yb, yb_ref);
        weight.backward_data(dy.data(), n, dx.data());
        gemm_bf16(Trans::No, Trans::No, n, cols, rows, 1.0f, dy.data(), rows, wb.data(), cols, 0.0f, dx_ref.data(),
                  cols);
        EXPECT_EQ(y, y_ref);
        EXPECT_EQ(dx, dx_ref);
      }
    }
    EXPECT_GE(weight.bytes(), int64_t(3 * rows * cols * 2)) << "the rounded copy and two packed copies";
  }
}

// The weight gradient (our panel GEMM on dY^T's pairs and X's panels, with AVX512-BF16) equals
// gemm_bf16's (oneDNN's) dY^T X accumulated into dW, bit for bit: at these sizes both sum each
// output's pairs in token order in one f32 accumulator and add it to dW once. At sizes off the blocks
// and at a gpt-bench-like shape, called twice (accumulates; the second call reuses the cached buffers
// with new X).
TEST(WeightGradBf16, EqualsGemmBf16TransposedAndAccumulates) {
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{96, 80, 70}, {37, 130, 9}, {384, 768, 512}}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " K=" << K);
    const auto dy = random_bf16(size_t(K * M), 41);
    std::vector<float> dw = testing::random_vector(size_t(M * N), 42), dw_ref = dw;
    for (uint32_t call = 0; call < 2; ++call) {
      const auto x = random_bf16(size_t(K * N), 43 + call);
      weight_grad_bf16(M, N, K, dy.data(), x.data(), dw.data());
      gemm_bf16(Trans::Yes, Trans::No, M, N, K, 1.0f, dy.data(), M, x.data(), N, 1.0f, dw_ref.data(), N);
      ASSERT_EQ(dw, dw_ref) << "call " << call;
    }
  }
  std::vector<float> untouched(4, 1.5f);
  weight_grad_bf16(2, 2, 0, nullptr, nullptr, untouched.data());  // no tokens: nothing added
  EXPECT_EQ(untouched, std::vector<float>(4, 1.5f));
}

}  // namespace
}  // namespace tensorpar
