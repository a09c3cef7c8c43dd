#include "tensorpar/kernels/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <omp.h>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/parallel_errors.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/scratch.hpp"
#include "tensorpar/kernels/vec_math.hpp"

namespace tensorpar {
namespace {

// Query rows per block and keys per block. 64 x 256 scores (64 KiB) plus the 64 x hd accumulator stay
// in L2; the key block is clipped at the causal edge so only the 64 x 64 diagonal tile wastes work.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 256;

// The block GEMMs here are small (64 x 256 x hd): threading one of them costs more than it saves, and
// parallelism comes from the (batch, head) loop. oneDNN runs single-threaded inside an active OpenMP
// region but forks omp_get_max_threads() otherwise, so the serial paths drop to one thread meanwhile.
class SingleThreadedGemms {
 public:
  SingleThreadedGemms() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreadedGemms() { omp_set_num_threads(saved_); }
  SingleThreadedGemms(const SingleThreadedGemms&) = delete;
  SingleThreadedGemms& operator=(const SingleThreadedGemms&) = delete;

 private:
  int saved_;
};

// f(i, j) for every i < n0, j < n1: in parallel over the pairs when `parallel` (enough tasks and work),
// otherwise serially with single-threaded GEMMs. Each call must touch only its own outputs. f can throw
// (a GEMM failure, a scratch allocation): the first exception is rethrown here after the region, the
// tasks not yet started are skipped.
template <class F>
void for_each_task(int64_t n0, int64_t n1, bool parallel, const F& f) {
  if (parallel && n0 * n1 > 1 && omp_get_max_threads() > 1) {
    ParallelErrors errors;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t i = 0; i < n0; ++i)
      for (int64_t j = 0; j < n1; ++j)
        if (!errors.failed()) errors.run([&] { f(i, j); });
    errors.rethrow();
  } else {
    SingleThreadedGemms guard;
    for (int64_t i = 0; i < n0; ++i)
      for (int64_t j = 0; j < n1; ++j) f(i, j);
  }
}

void check_dims(const AttentionDims& d, const char* who) {
  TP_CHECK(d.batch >= 0 && d.seq >= 0 && d.n_heads > 0 && d.n_kv_heads > 0 && d.head_dim > 0, ShapeError,
           "{}: need batch, seq >= 0 and n_heads, n_kv_heads, head_dim > 0; got B={} T={} H={} KV={} hd={}", who,
           d.batch, d.seq, d.n_heads, d.n_kv_heads, d.head_dim);
  TP_CHECK(d.n_heads % d.n_kv_heads == 0, ShapeError,
           "{}: n_heads={} is not a multiple of n_kv_heads={}; GQA needs each kv head shared by the same number of "
           "query heads",
           who, d.n_heads, d.n_kv_heads);
}

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
        float* s = S + i * nk;
        float* o = O + i * hd;
        const int64_t pos = pos0 + (i0 + i) / rows_per_pos;
        const int64_t valid = std::min(nk, pos - k0 + 1);  // may be <= 0 on the diagonal block
        float mx = m[i];
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < std::max<int64_t>(valid, 0); ++j) mx = s[j] > mx ? s[j] : mx;
        // Online softmax: later key blocks rescale what is accumulated by exp(m_old - m_new).
        const float corr = m[i] == kNegInf ? 0.0f : detail::exp_approx(m[i] - mx);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < std::max<int64_t>(valid, 0); ++j) {
          const float p = detail::exp_approx(s[j] - mx);
          s[j] = p;
          sum += p;
        }
        for (int64_t j = std::max<int64_t>(valid, 0); j < nk; ++j) s[j] = 0.0f;
        if (k0 == 0) {  // O starts at zero (the P V gemm accumulates with beta = 1)
          for (int64_t c = 0; c < hd; ++c) o[c] = 0.0f;
        } else if (corr != 1.0f) {
#pragma omp simd
          for (int64_t c = 0; c < hd; ++c) o[c] *= corr;
        }
        l[i] = l[i] * corr + sum;
        m[i] = mx;
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
  check_dims(d, "attention_forward");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  for_each_task(B, H, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t h) {
    const int64_t g = h / group;
    const float* base = qkv + b * T * ld;
    attend(out + b * T * ldo + h * hd, ldo, lse + (b * H + h) * T, base + h * hd, ld, base + (H + g) * hd,
           base + (H + KV + g) * hd, ld, T, 0, 1, hd, scale);
  });
}

void attention_forward_cached(float* out, const float* q, int64_t ldq, const float* k_cache, const float* v_cache,
                              int64_t max_seq, int64_t past_len, int64_t n_new, const AttentionDims& d) {
  check_dims(d, "attention_forward_cached");
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
    for_each_task(B, KV, B * past_len * H * hd >= (1 << 18), [&](int64_t b, int64_t g) {
      const float* kb = k_cache + b * max_seq * ldk + g * hd;
      const float* vb = v_cache + b * max_seq * ldk + g * hd;
      attend(out + b * ldo + g * group * hd, hd, nullptr, q + b * ldq + g * group * hd, hd, kb, vb, ldk, group,
             past_len, group, hd, scale);
    });
    return;
  }
  for_each_task(B, H, B * n_new * (past_len + n_new) * H * hd >= (1 << 18), [&](int64_t b, int64_t h) {
    const int64_t g = h / group;
    attend(out + b * n_new * ldo + h * hd, ldo, nullptr, q + b * n_new * ldq + h * hd, ldq,
           k_cache + b * max_seq * ldk + g * hd, v_cache + b * max_seq * ldk + g * hd, ldk, n_new, past_len, 1, hd,
           scale);
  });
}

void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                        const AttentionDims& d) {
  check_dims(d, "attention_backward");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // One task per (batch, kv head): it owns dK/dV of that kv head and dQ of its query heads, so nothing races.
  for_each_task(B, KV, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t g) {
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
        for (int64_t i = 0; i < nq; ++i) {  // D_i = rowsum(dO_i * O_i)
          const float* o = O + (i0 + i) * ldo;
          const float* dout_i = dO + (i0 + i) * ldo;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < hd; ++c) s += o[c] * dout_i[c];
          D[i] = s;
        }
        const int64_t key_end = i0 + nq;
        for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
          const int64_t nk = std::min(kBlockK, key_end - k0);
          // P = exp(scale Q K^T - lse), masked; dP = dO V^T.
          gemm(Trans::No, Trans::Yes, nq, nk, hd, scale, Q + i0 * ld, ld, K + k0 * ld, ld, 0.0f, P, nk);
          gemm(Trans::No, Trans::Yes, nq, nk, hd, 1.0f, dO + i0 * ldo, ldo, V + k0 * ld, ld, 0.0f, dP, nk);
          for (int64_t i = 0; i < nq; ++i) {
            float* p = P + i * nk;
            float* dp = dP + i * nk;
            const int64_t valid = std::max<int64_t>(0, std::min(nk, i0 + i - k0 + 1));
            const float li = L[i0 + i], di = D[i];
#pragma omp simd
            for (int64_t j = 0; j < valid; ++j) {
              const float pj = detail::exp_approx(p[j] - li);
              p[j] = pj;
              dp[j] = pj * (dp[j] - di);  // dS
            }
            for (int64_t j = valid; j < nk; ++j) p[j] = dp[j] = 0.0f;
          }
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
