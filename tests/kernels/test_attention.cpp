#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/attention.hpp"

namespace tensorpar {
using testing::all_close;
using testing::dot;
using testing::expect_gradient;
using testing::random_vector;

namespace {

// Naive causal GQA attention in double: the full masked score matrix per (batch, head).
void reference_attention(std::vector<float>& out, std::vector<float>& lse, const std::vector<float>& qkv,
                         const AttentionDims& d) {
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd;
  out.assign(B * T * H * hd, 0.0f);
  lse.assign(B * H * T, 0.0f);
  const double scale = 1 / std::sqrt(double(hd));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t t = 0; t < T; ++t) {
        const float* q = &qkv[(b * T + t) * ld + h * hd];
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          const float* k = &qkv[(b * T + j) * ld + (H + g) * hd];
          double acc = 0;
          for (int64_t c = 0; c < hd; ++c) acc += double(q[c]) * k[c];
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += std::exp(s[j] - mx);
        lse[(b * H + h) * T + t] = float(mx + std::log(sum));
        for (int64_t c = 0; c < hd; ++c) {
          double acc = 0;
          for (int64_t j = 0; j <= t; ++j) acc += std::exp(s[j] - mx) / sum * qkv[(b * T + j) * ld + (H + KV + g) * hd + c];
          out[(b * T + t) * H * hd + h * hd + c] = float(acc);
        }
      }
    }
}

}  // namespace

struct AttnCase {
  int64_t B, T, H, KV, hd;
};
void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "B=" << c.B << " T=" << c.T << " H=" << c.H << " KV=" << c.KV << " hd=" << c.hd;
}

class AttentionForward : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionForward, MatchesNaiveMaskedSoftmax) {
  const auto c = GetParam();
  const AttentionDims d{c.B, c.T, c.H, c.KV, c.hd};
  const int64_t ld = (c.H + 2 * c.KV) * c.hd;
  // Scale 2 makes some softmax rows peaked (exercises the running-max rescaling across key blocks).
  auto qkv = random_vector(c.B * c.T * ld, uint32_t(c.T * 31 + c.KV), 2.0f);
  std::vector<float> out(c.B * c.T * c.H * c.hd, 7.0f), lse(c.B * c.H * c.T, 7.0f), e_out, e_lse;
  reference_attention(e_out, e_lse, qkv, d);
  attention_forward(out.data(), lse.data(), qkv.data(), d);
  EXPECT_TRUE(all_close(out, e_out, 1e-4, 1e-5));
  EXPECT_TRUE(all_close(lse, e_lse, 1e-5, 1e-5));
}

// T = 1, 7, 130 (not a multiple of the 64-row query block), 300 (several 256-key blocks), GQA 4/2 and 4/1.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionForward,
                         ::testing::Values(AttnCase{1, 1, 2, 2, 8}, AttnCase{2, 7, 4, 2, 16}, AttnCase{1, 130, 4, 1, 16},
                                           AttnCase{2, 130, 4, 4, 32}, AttnCase{1, 300, 4, 2, 64},
                                           AttnCase{1, 64, 3, 1, 8}));

TEST(Attention, RejectsHeadsNotDivisibleByKvHeads) {
  std::vector<float> buf(1024);
  EXPECT_THROW(attention_forward(buf.data(), buf.data(), buf.data(), AttentionDims{1, 2, 4, 3, 8}), ShapeError);
}

class AttentionBackward : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionBackward, MatchesFiniteDifferencesAndOverwrites) {
  const auto c = GetParam();
  const AttentionDims d{c.B, c.T, c.H, c.KV, c.hd};
  const int64_t ld = (c.H + 2 * c.KV) * c.hd, n_out = c.B * c.T * c.H * c.hd;
  auto qkv = random_vector(c.B * c.T * ld, 11, 1.5f), w = random_vector(n_out, 12);
  std::vector<float> out(n_out), lse(c.B * c.H * c.T), dqkv(qkv.size(), 99.0f);
  attention_forward(out.data(), lse.data(), qkv.data(), d);
  attention_backward(dqkv.data(), w.data(), out.data(), lse.data(), qkv.data(), d);
  std::vector<float> again(qkv.size(), -5.0f);
  attention_backward(again.data(), w.data(), out.data(), lse.data(), qkv.data(), d);
  EXPECT_TRUE(all_close(again, dqkv, 0, 0)) << "backward must overwrite dqkv";
  // Finite differences on every element would be slow for the larger case; check all of q, k and v of
  // the tiny case and 48 random indices otherwise.
  std::vector<float> o2(n_out), l2(lse.size());
  auto loss = [&] {
    attention_forward(o2.data(), l2.data(), qkv.data(), d);
    return dot(o2, w);
  };
  const int count = qkv.size() <= 200 ? int(qkv.size()) : 48;
  expect_gradient("qkv", qkv, dqkv, loss, 1e-2, count);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionBackward,
                         ::testing::Values(AttnCase{1, 3, 2, 1, 4}, AttnCase{2, 5, 4, 2, 4}, AttnCase{1, 70, 4, 2, 8},
                                           AttnCase{1, 300, 2, 1, 8}));

TEST(Attention, BackwardMatchesDoubleReferenceOnLongerSequence) {
  // Several query and key blocks with GQA: every element of dV against the closed form in double,
  // dV_j = sum over the group's query heads h and t >= j of P_h[t,j] dO_h[t].
  const AttentionDims d{1, 300, 4, 2, 16};
  const int64_t H = 4, KV = 2, hd = 16, T = 300, ld = (H + 2 * KV) * hd;
  auto qkv = random_vector(T * ld, 21, 1.5f), dout = random_vector(T * H * hd, 22);
  std::vector<float> out(T * H * hd), lse(H * T), dqkv(qkv.size());
  attention_forward(out.data(), lse.data(), qkv.data(), d);
  attention_backward(dqkv.data(), dout.data(), out.data(), lse.data(), qkv.data(), d);
  std::vector<double> dv(T * KV * hd, 0.0);
  const double scale = 1 / std::sqrt(double(hd));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / KV);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j <= t; ++j) {
        double s = 0;
        for (int64_t c = 0; c < hd; ++c) s += double(qkv[t * ld + h * hd + c]) * qkv[j * ld + (H + g) * hd + c];
        const double p = std::exp(s * scale - lse[h * T + t]);
        for (int64_t c = 0; c < hd; ++c) dv[(j * KV + g) * hd + c] += p * dout[t * H * hd + h * hd + c];
      }
  }
  std::vector<float> got(T * KV * hd), want(T * KV * hd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < KV * hd; ++k) {
      got[t * KV * hd + k] = dqkv[t * ld + (H + KV) * hd + k];
      want[t * KV * hd + k] = float(dv[t * KV * hd + k]);
    }
  EXPECT_TRUE(all_close(got, want, 1e-4, 1e-5));
}

TEST(Attention, CachedForwardEqualsFullForward) {
  for (int64_t KV : {2, 1, 4}) {
    const int64_t B = 2, T = 75, H = 4, hd = 16, max_seq = 96;
    const AttentionDims d{B, T, H, KV, hd};
    const int64_t ld = (H + 2 * KV) * hd;
    auto qkv = random_vector(B * T * ld, uint32_t(40 + KV), 2.0f);
    std::vector<float> ref(B * T * H * hd), lse(B * H * T);
    attention_forward(ref.data(), lse.data(), qkv.data(), d);
    // Fill the caches as an inference engine would: k/v of all positions of each batch element.
    std::vector<float> kc(B * max_seq * KV * hd, 0.0f), vc(kc.size(), 0.0f);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < KV * hd; ++k) {
          kc[(b * max_seq + t) * KV * hd + k] = qkv[(b * T + t) * ld + H * hd + k];
          vc[(b * max_seq + t) * KV * hd + k] = qkv[(b * T + t) * ld + (H + KV) * hd + k];
        }
    // Prefill in two chunks (0..39, 40..69), then decode 70..74 one token at a time. Queries are read
    // straight from qkv rows (stride ld) after copying the chunk's rows of all batch elements together.
    std::vector<float> got(B * T * H * hd, 0.0f);
    auto run = [&](int64_t past, int64_t n_new) {
      std::vector<float> q(B * n_new * ld), o(B * n_new * H * hd);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n_new; ++i)
          for (int64_t k = 0; k < ld; ++k) q[(b * n_new + i) * ld + k] = qkv[(b * T + past + i) * ld + k];
      attention_forward_cached(o.data(), q.data(), ld, kc.data(), vc.data(), max_seq, past, n_new, d);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n_new; ++i)
          for (int64_t k = 0; k < H * hd; ++k) got[(b * T + past + i) * H * hd + k] = o[(b * n_new + i) * H * hd + k];
    };
    run(0, 40);
    run(40, 30);
    for (int64_t p = 70; p < T; ++p) run(p, 1);
    EXPECT_TRUE(all_close(got, ref, 1e-5, 1e-6)) << "KV=" << KV;
  }
  std::vector<float> buf(4096);
  EXPECT_THROW(attention_forward_cached(buf.data(), buf.data(), 64, buf.data(), buf.data(), 8, 6, 3,
                                        AttentionDims{1, 1, 4, 2, 16}),
               ShapeError);
}

}  // namespace tensorpar
