// What the f32 and the bf16 attention kernels share: the block sizes, the task loop over (batch, head),
// and the per-row softmax steps of the flash-style forward and backward.
// Internal to kernels/: not part of the public API.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include <omp.h>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/parallel_errors.hpp"
#include "tensorpar/kernels/attention.hpp"
#include "tensorpar/kernels/vec_math.hpp"

namespace tensorpar::detail {

// Query rows per block and keys per block. 64 x 256 scores (64 KiB) plus the 64 x hd accumulator stay
// in L2; the key block is clipped at the causal edge so only the 64 x 64 diagonal tile wastes work.
constexpr int64_t kBlockQ = 64;
constexpr int64_t kBlockK = 256;

// The block GEMMs are small (64 x 256 x hd): threading one of them costs more than it saves, and
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
void for_each_attention_task(int64_t n0, int64_t n1, bool parallel, const F& f) {
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

inline void check_attention_dims(const AttentionDims& d, const char* who) {
  TP_CHECK(d.batch >= 0 && d.seq >= 0 && d.n_heads > 0 && d.n_kv_heads > 0 && d.head_dim > 0, ShapeError,
           "{}: need batch, seq >= 0 and n_heads, n_kv_heads, head_dim > 0; got B={} T={} H={} KV={} hd={}", who,
           d.batch, d.seq, d.n_heads, d.n_kv_heads, d.head_dim);
  TP_CHECK(d.n_heads % d.n_kv_heads == 0, ShapeError,
           "{}: n_heads={} is not a multiple of n_kv_heads={}; GQA needs each kv head shared by the same number of "
           "query heads",
           who, d.n_heads, d.n_kv_heads);
}

// One query row of the online softmax over one key block: the scores s[0, nk) (only s[0, valid) are
// unmasked; valid is clamped to [0, nk], it is <= 0 on the diagonal block's first rows) become probabilities exp(s - m_new) with masked
// ones 0; the row's running max m and sum l, and its output accumulator o (hd; zeroed when `first`,
// else rescaled by exp(m_old - m_new)) are updated for the P V product that follows.
inline void online_softmax_row(float* s, int64_t nk, int64_t valid, float& m, float& l, float* o, int64_t hd,
                               bool first) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  valid = std::clamp<int64_t>(valid, 0, nk);
  float mx = m;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < valid; ++j) mx = s[j] > mx ? s[j] : mx;
  const float corr = m == kNegInf ? 0.0f : exp_approx(m - mx);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < valid; ++j) {
    const float p = exp_approx(s[j] - mx);
    s[j] = p;
    sum += p;
  }
  for (int64_t j = valid; j < nk; ++j) s[j] = 0.0f;
  if (first) {  // O starts at zero (the P V gemm accumulates with beta = 1)
    for (int64_t c = 0; c < hd; ++c) o[c] = 0.0f;
  } else if (corr != 1.0f) {
#pragma omp simd
    for (int64_t c = 0; c < hd; ++c) o[c] *= corr;
  }
  l = l * corr + sum;
  m = mx;
}

// D_i = rowsum(dO_i * O_i) for `rows` query rows (row stride ld): the softmax backward's per-row term.
inline void output_grad_dots(float* D, const float* O, const float* dO, int64_t ld, int64_t rows, int64_t hd) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* o = O + i * ld;
    const float* d = dO + i * ld;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < hd; ++c) s += o[c] * d[c];
    D[i] = s;
  }
}

// One query row of the backward: p holds the scaled scores, dp = dO V^T. They become P = exp(s - lse)
// and dS = P * (dP - D), masked entries (j >= valid, valid clamped to [0, nk]) 0.
inline void softmax_backward_row(float* p, float* dp, int64_t nk, int64_t valid, float lse, float d) {
  valid = std::clamp<int64_t>(valid, 0, nk);
#pragma omp simd
  for (int64_t j = 0; j < valid; ++j) {
    const float pj = exp_approx(p[j] - lse);
    p[j] = pj;
    dp[j] = pj * (dp[j] - d);
  }
  for (int64_t j = valid; j < nk; ++j) p[j] = dp[j] = 0.0f;
}

}  // namespace tensorpar::detail
