#include "tensorpar/kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensorpar/kernels/attention_blocks.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/scratch.hpp"

namespace tensorpar {
namespace {

using detail::kBlockK;
using detail::kBlockQ;

// Causal attention of one group of query rows against one key/value sequence.
// Q (n_q, hd; row stride ldq): row i is at position pos0 + i / rows_per_pos and sees keys 0..that position.
// K, V (>= last position + 1 rows, hd; row stride ldk). out (n_q, hd; row stride ldo); lse (n_q) or null.
void attend(float* out, int64_t ldo, float* lse, const float* Q, int64_t ldq, const float* K, const float* V,
            int64_t ldk, int64_t n_q, int64_t pos0, int64_t rows_per_pos, int64_t hd, float scale) {
  float* S = detail::scratch_floats(size_t(kBlockQ * kBlockK), 0);  // scores, then probabilities
  float* O = detail::scratch_floats(size_t(kBlockQ * hd), 1);       // unnormalised output accumulator
  float* ml = detail::scratch_floats(size_t(2 * kBlockQ), 2);       // running max and sum per row
  float* m = ml;
  float* l = ml + kBlockQ;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i0 = 0; i0 < n_q; i0 += kBlockQ) {
    const int64_t nq = std::min(kBlockQ, n_q - i0);
    const int64_t key_end = pos0 + (i0 + nq - 1) / rows_per_pos + 1;  // keys this block can see: [0, key_end)
    for (int64_t i = 0; i < nq; ++i) {
      m[i] = kNegInf;
      l[i] = 0.0f;
    }
    for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
      const int64_t nk = std::min(kBlockK, key_end - k0);
      gemm(Trans::No, Trans::Yes, nq, nk, hd, scale, Q + i0 * ldq, ldq, K + k0 * ldk, ldk, 0.0f, S, nk);
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t pos = pos0 + (i0 + i) / rows_per_pos;
        detail::online_softmax_row(S + i * nk, nk, pos - k0 + 1, m[i], l[i], O + i * hd, hd, k0 == 0);
      }
      gemm(Trans::No, Trans::No, nq, hd, nk, 1.0f, S, nk, V + k0 * ldk, ldk, 1.0f, O, hd);
    }
    for (int64_t i = 0; i < nq; ++i) {
      const float inv = 1.0f / l[i];
      float* dst = out + (i0 + i) * ldo;
      const float* o = O + i * hd;
#pragma omp simd
      for (int64_t c = 0; c < hd; ++c) dst[c] = o[c] * inv;
      if (lse) lse[i0 + i] = m[i] + std::log(l[i]);
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, const AttentionDims& d) {
  detail::check_attention_dims(d, "attention_forward");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  detail::for_each_attention_task(B, H, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t h) {
    const int64_t g = h / group;
    const float* base = qkv + b * T * ld;
    attend(out + b * T * ldo + h * hd, ldo, lse + (b * H + h) * T, base + h * hd, ld, base + (H + g) * hd,
           base + (H + KV + g) * hd, ld, T, 0, 1, hd, scale);
  });
}

void attention_forward_cached(float* out, const float* q, int64_t ldq, const float* k_cache, const float* v_cache,
                              int64_t max_seq, int64_t past_len, int64_t n_new, const AttentionDims& d) {
  detail::check_attention_dims(d, "attention_forward_cached");
  const int64_t B = d.batch, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ldk = KV * hd, ldo = H * hd, group = H / KV;
  TP_CHECK(ldq >= H * hd, ShapeError, "attention_forward_cached: ldq={} is less than n_heads*head_dim={}", ldq, H * hd);
  TP_CHECK(past_len >= 0 && n_new >= 0 && past_len + n_new <= max_seq, ShapeError,
           "attention_forward_cached: positions {}..{} do not fit the cache of max_seq={}; allocate a longer cache",
           past_len, past_len + n_new - 1, max_seq);
  const float scale = float(1.0 / std::sqrt(double(hd)));
  if (n_new == 1) {
    // Decode: the `group` query heads sharing a kv head are one (group, hd) matrix of stride hd at one
    // position, so each kv head's K/V is streamed once for all of them.
    detail::for_each_attention_task(B, KV, B * past_len * H * hd >= (1 << 18), [&](int64_t b, int64_t g) {
      const float* kb = k_cache + b * max_seq * ldk + g * hd;
      const float* vb = v_cache + b * max_seq * ldk + g * hd;
      attend(out + b * ldo + g * group * hd, hd, nullptr, q + b * ldq + g * group * hd, hd, kb, vb, ldk, group,
             past_len, group, hd, scale);
    });
    return;
  }
  detail::for_each_attention_task(B, H, B * n_new * (past_len + n_new) * H * hd >= (1 << 18), [&](int64_t b, int64_t h) {
    const int64_t g = h / group;
    attend(out + b * n_new * ldo + h * hd, ldo, nullptr, q + b * n_new * ldq + h * hd, ldq,
           k_cache + b * max_seq * ldk + g * hd, v_cache + b * max_seq * ldk + g * hd, ldk, n_new, past_len, 1, hd,
           scale);
  });
}

void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                        const AttentionDims& d) {
  detail::check_attention_dims(d, "attention_backward");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // One task per (batch, kv head): it owns dK/dV of that kv head and dQ of its query heads, so nothing races.
  detail::for_each_attention_task(B, KV, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t g) {
    float* P = detail::scratch_floats(size_t(kBlockQ * kBlockK), 0);
    float* dP = detail::scratch_floats(size_t(kBlockQ * kBlockK), 1);
    float* D = detail::scratch_floats(size_t(kBlockQ), 2);
    const float* base = qkv + b * T * ld;
    float* dbase = dqkv + b * T * ld;
    const float* K = base + (H + g) * hd;
    const float* V = base + (H + KV + g) * hd;
    float* dK = dbase + (H + g) * hd;
    float* dV = dbase + (H + KV + g) * hd;
    for (int64_t t = 0; t < T; ++t) {
      std::fill_n(dK + t * ld, hd, 0.0f);
      std::fill_n(dV + t * ld, hd, 0.0f);
      std::fill_n(dbase + t * ld + g * group * hd, group * hd, 0.0f);
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float* Q = base + h * hd;
      float* dQ = dbase + h * hd;
      const float* O = out + b * T * ldo + h * hd;
      const float* dO = dout + b * T * ldo + h * hd;
      const float* L = lse + (b * H + h) * T;
      for (int64_t i0 = 0; i0 < T; i0 += kBlockQ) {
        const int64_t nq = std::min(kBlockQ, T - i0);
        detail::output_grad_dots(D, O + i0 * ldo, dO + i0 * ldo, ldo, nq, hd);
        const int64_t key_end = i0 + nq;
        for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
          const int64_t nk = std::min(kBlockK, key_end - k0);
          // P = exp(scale Q K^T - lse), masked; dP = dO V^T.
          gemm(Trans::No, Trans::Yes, nq, nk, hd, scale, Q + i0 * ld, ld, K + k0 * ld, ld, 0.0f, P, nk);
          gemm(Trans::No, Trans::Yes, nq, nk, hd, 1.0f, dO + i0 * ldo, ldo, V + k0 * ld, ld, 0.0f, dP, nk);
          for (int64_t i = 0; i < nq; ++i)
            detail::softmax_backward_row(P + i * nk, dP + i * nk, nk, i0 + i - k0 + 1, L[i0 + i], D[i]);
          // dV += P^T dO;  dQ += scale dS K;  dK += scale dS^T Q.
          gemm(Trans::Yes, Trans::No, nk, hd, nq, 1.0f, P, nk, dO + i0 * ldo, ldo, 1.0f, dV + k0 * ld, ld);
          gemm(Trans::No, Trans::No, nq, hd, nk, scale, dP, nk, K + k0 * ld, ld, 1.0f, dQ + i0 * ld, ld);
          gemm(Trans::Yes, Trans::No, nk, hd, nq, scale, dP, nk, Q + i0 * ld, ld, 1.0f, dK + k0 * ld, ld);
        }
      }
    }
  });
}

}  // namespace tensorpar
