// gemm (oneDNN sgemm) against a naive double-precision loop: all four transpose combinations,
// leading dimensions wider than the matrices, beta 0 and 1, and sentinels in the padding of C.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tensorpar/kernels/gemm.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

struct GemmCase {
  Trans ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

// Reference in double; also returns, per element, sum_k |alpha*a*b| + |beta*c| for the error bound.
void gemm_reference(const GemmCase& g, const float* A, int64_t lda, const float* B, int64_t ldb, const float* C0,
                    int64_t ldc, std::vector<double>& ref, std::vector<double>& mag) {
  ref.assign(size_t(g.M * g.N), 0.0);
  mag.assign(size_t(g.M * g.N), 0.0);
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        const double a = g.ta == Trans::Yes ? A[k * lda + i] : A[i * lda + k];
        const double b = g.tb == Trans::Yes ? B[j * ldb + k] : B[k * ldb + j];
        s += a * b;
        m += std::fabs(a * b);
      }
      const double c = g.beta == 0 ? 0.0 : double(g.beta) * C0[i * ldc + j];
      ref[size_t(i * g.N + j)] = g.alpha * s + c;
      mag[size_t(i * g.N + j)] = std::fabs(g.alpha) * m + std::fabs(c);
    }
}

void run_case(const GemmCase& g) {
  SCOPED_TRACE(::testing::Message() << "ta=" << int(g.ta) << " tb=" << int(g.tb) << " M=" << g.M << " N=" << g.N
                                    << " K=" << g.K << " alpha=" << g.alpha << " beta=" << g.beta);
  // Stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K]; leading dims padded by odd amounts.
  const int64_t a_rows = g.ta == Trans::Yes ? g.K : g.M, a_cols = g.ta == Trans::Yes ? g.M : g.K;
  const int64_t b_rows = g.tb == Trans::Yes ? g.N : g.K, b_cols = g.tb == Trans::Yes ? g.K : g.N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = g.N + 7;
  const auto A = testing::random_vector(size_t(a_rows * lda), 1);
  const auto B = testing::random_vector(size_t(b_rows * ldb), 2);
  auto C = testing::random_vector(size_t(g.M * ldc), 3);
  const float sentinel = 12345.0f;
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = g.N; j < ldc; ++j) C[size_t(i * ldc + j)] = sentinel;
  if (g.beta == 0)  // beta == 0 must ignore C, even NaN
    for (int64_t i = 0; i < g.M; ++i) C[size_t(i * ldc)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<double> ref, mag;
  gemm_reference(g, A.data(), lda, B.data(), ldb, C.data(), ldc, ref, mag);

  gemm(g.ta, g.tb, g.M, g.N, g.K, g.alpha, A.data(), lda, B.data(), ldb, g.beta, C.data(), ldc);

  // f32 products and sums each round by at most 2^-24 relative: |err| <= (K+2) 2^-24 sum|terms|.
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

TEST(Gemm, AllTransposesLeadingDimsAndBeta) {
  for (Trans ta : {Trans::No, Trans::Yes})
    for (Trans tb : {Trans::No, Trans::Yes})
      for (float beta : {0.0f, 1.0f}) {
        run_case({ta, tb, 37, 29, 53, 1.0f, beta});
        run_case({ta, tb, 96, 160, 257, 1.0f, beta});
      }
}

TEST(Gemm, AlphaAndGeneralBeta) {
  run_case({Trans::No, Trans::Yes, 33, 17, 65, 0.5f, 0.0f});
  run_case({Trans::Yes, Trans::No, 33, 17, 65, -2.0f, 0.25f});
}

TEST(Gemm, EmptyReductionScalesC) {
  // Non-null A and B: oneDNN 2.6 sgemm returns invalid_arguments for K=0 with null pointers.
  std::vector<float> C = {1, 2, 3, 4}, A(2), B(2);
  gemm(Trans::No, Trans::No, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 1.0f, C.data(), 2);
  EXPECT_TRUE(testing::all_close(C, std::vector<float>{1, 2, 3, 4}));
}

}  // namespace
}  // namespace tensorpar
