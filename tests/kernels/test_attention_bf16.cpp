// The bf16 attention kernels against the f32 ones. The inputs (q, k, v, dO) are made bf16-exact
// first, so what differs is only what the bf16 kernels round on the way: the probabilities P and
// dS (relative 2^-9 each) and the order of the f32 sums. Bounds, about 3x the largest error measured
// over the shapes below:
//   forward out: |bf16 - f32| <= 3e-3 * max |v| (measured <= 1.2e-3); lse: <= 1e-5 relative (P is not
//   rounded before its sum; measured <= 4.8e-7);
//   backward dq, dk, dv: <= 1e-2 * max |that gradient| (measured <= 3.7e-3).
// A kernel that used a wrong layout or block is off by O(1) of these maxima.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <tuple>
#include <vector>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/kernels/attention.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::random_vector;

std::vector<float> bf16_exact(std::vector<float> v) {
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// Largest |a - b| over the elements of column range [c0, c1) of rows of width ld.
double max_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t ld, int64_t c0, int64_t c1) {
  double m = 0;
  for (size_t r = 0; r < a.size() / size_t(ld); ++r)
    for (int64_t c = c0; c < c1; ++c) m = std::max(m, std::fabs(double(a[r * ld + c]) - double(b[r * ld + c])));
  return m;
}

double max_abs_cols(const std::vector<float>& a, int64_t ld, int64_t c0, int64_t c1) {
  double m = 0;
  for (size_t r = 0; r < a.size() / size_t(ld); ++r)
    for (int64_t c = c0; c < c1; ++c) m = std::max(m, double(std::fabs(a[r * ld + c])));
  return m;
}

struct Case {
  int64_t B, T, H, KV, hd;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "B=" << c.B << " T=" << c.T << " H=" << c.H << " KV=" << c.KV << " hd=" << c.hd;
}

class AttentionBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionBf16, ForwardAndBackwardWithinTheirBoundsOfF32) {
  const Case c = GetParam();
  const AttentionDims d{c.B, c.T, c.H, c.KV, c.hd};
  const int64_t ld = (c.H + 2 * c.KV) * c.hd, ldo = c.H * c.hd, n_out = c.B * c.T * ldo;
  // Scale 2: peaked softmax rows, so the running-max rescaling across key blocks is exercised.
  const auto qkv = bf16_exact(random_vector(size_t(c.B * c.T * ld), uint32_t(c.T * 13 + c.hd), 2.0f));
  const auto dout = bf16_exact(random_vector(size_t(n_out), uint32_t(c.T + 5)));
  std::vector<float> out32(n_out), lse32(c.B * c.H * c.T), out16(n_out, 7.0f), lse16(lse32.size(), 7.0f);
  attention_forward(out32.data(), lse32.data(), qkv.data(), d);
  attention_forward_bf16(out16.data(), lse16.data(), qkv.data(), d);
  const double vmax = max_abs_cols(qkv, ld, (c.H + c.KV) * c.hd, ld);
  EXPECT_LE(max_diff(out16, out32, ldo, 0, ldo), 3e-3 * vmax);
  EXPECT_LE(max_diff(lse16, lse32, 1, 0, 1), 1e-5 * std::max(1.0, max_abs(lse32)));

  std::vector<float> dqkv32(qkv.size()), dqkv16(qkv.size(), 99.0f);
  attention_backward(dqkv32.data(), dout.data(), out32.data(), lse32.data(), qkv.data(), d);
  attention_backward_bf16(dqkv16.data(), dout.data(), out16.data(), lse16.data(), qkv.data(), d);
  const int64_t q_end = c.H * c.hd, k_end = q_end + c.KV * c.hd;
  for (auto [name, c0, c1] : {std::tuple{"dq", int64_t(0), q_end}, std::tuple{"dk", q_end, k_end},
                              std::tuple{"dv", k_end, ld}}) {
    const double diff = max_diff(dqkv16, dqkv32, ld, c0, c1), scale = max_abs_cols(dqkv32, ld, c0, c1);
    EXPECT_LE(diff, 1e-2 * scale) << name << ": max |bf16 - f32| " << diff << " of max |" << name << "| " << scale;
    if (c.T > 1 || c1 == ld) {  // one key: softmax is constant, dq = dk = 0
      EXPECT_GT(scale, 0.0) << name;
    }
  }
  std::vector<float> again(qkv.size(), -5.0f);
  attention_backward_bf16(again.data(), dout.data(), out16.data(), lse16.data(), qkv.data(), d);
  EXPECT_EQ(again, dqkv16) << "the backward must overwrite dqkv, and run the same way twice";
}

// T = 1, 7, 130 (not a multiple of the 64-row query block), 300 and 513 (several 256-key blocks, odd
// key counts at the causal edge), head dims 8, 24 (not a multiple of 16), 64 and 72, GQA 4/2 and 4/1.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionBf16,
                         ::testing::Values(Case{1, 1, 2, 2, 8}, Case{2, 7, 4, 2, 24}, Case{1, 130, 4, 1, 16},
                                           Case{2, 130, 4, 4, 64}, Case{1, 300, 4, 2, 64}, Case{1, 513, 2, 2, 72},
                                           Case{3, 256, 2, 1, 64}));

}  // namespace
}  // namespace tensorpar
