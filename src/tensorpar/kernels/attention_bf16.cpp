// The flash-style causal attention of attention.cpp with its block GEMMs in bf16 (bf16_tile_gemm).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <tuple>

#include "tensorpar/kernels/attention.hpp"
#include "tensorpar/kernels/attention_blocks.hpp"
#include "tensorpar/kernels/bf16_tile_gemm.hpp"
#include "tensorpar/kernels/scratch.hpp"

namespace tensorpar {
namespace {

using detail::bf16_pack_rows;
using detail::bf16_pack_vnni;
using detail::bf16_pack_vnni_transposed;
using detail::bf16_tile_gemm;
using detail::CausalSkip;
using detail::kBlockK;
using detail::kBlockQ;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Carves one thread's scratch into buffers of 64-byte aligned 32-bit words.
class ScratchCarver {
 public:
  explicit ScratchCarver(const std::initializer_list<int64_t>& words) {
    int64_t total = 0;
    for (int64_t w : words) total += round_up(w, 16);
    base_ = detail::scratch_floats(size_t(total) + 16, 3);
    base_ += (16 - (reinterpret_cast<uintptr_t>(base_) / 4) % 16) % 16;
  }
  template <class T>
  T* take(int64_t words) {
    T* p = reinterpret_cast<T*>(base_ + used_);
    used_ += round_up(words, 16);
    return p;
  }

 private:
  float* base_;
  int64_t used_ = 0;
};

// The layouts a head's operands are rounded into (sizes in 32-bit words, see bf16_tile_gemm.hpp).
struct HeadLayout {
  int64_t T, hd;
  int64_t pairs() const { return (hd + 1) / 2; }  // a row of Q/K/V/dO as A operand
  int64_t seq16() const { return round_up(T, 16); }  // columns of K^T / V^T as B operand
  int64_t hd16() const { return round_up(hd, 16); }  // columns of K / V / Q / dO as B operand
  int64_t rows_words() const { return T * pairs(); }
  int64_t transposed_words() const { return pairs() * seq16(); }
  int64_t vnni_words() const { return (T + 1) / 2 * hd16(); }
};

}  // namespace

void attention_forward_bf16(float* out, float* lse, const float* qkv, const AttentionDims& d) {
  if (!detail::bf16_tile_gemm_supported()) return attention_forward(out, lse, qkv, d);
  detail::check_attention_dims(d, "attention_forward_bf16");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const HeadLayout lay{T, hd};
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  detail::for_each_attention_task(B, H, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t h) {
    ScratchCarver scratch({lay.rows_words(), lay.transposed_words(), lay.vnni_words(), kBlockQ * kBlockK / 2,
                           kBlockQ * kBlockK, kBlockQ * hd, 2 * kBlockQ});
    auto* Qr = scratch.take<uint32_t>(lay.rows_words());         // Q rows (A of S = Q K^T)
    auto* KT = scratch.take<uint32_t>(lay.transposed_words());   // K^T (B of S)
    auto* Vv = scratch.take<uint32_t>(lay.vnni_words());         // V (B of O += P V)
    auto* P = scratch.take<uint32_t>(kBlockQ * kBlockK / 2);     // probabilities in bf16 (A of P V)
    float* S = scratch.take<float>(kBlockQ * kBlockK);           // scores, then probabilities in f32
    float* O = scratch.take<float>(kBlockQ * hd);                // unnormalised output accumulator
    float* m = scratch.take<float>(2 * kBlockQ);                 // running max and (below) sum per row
    float* l = m + kBlockQ;
    const float* base = qkv + b * T * ld;
    const int64_t g = h / group;
    bf16_pack_rows(Qr, lay.pairs(), base + h * hd, ld, T, hd);
    bf16_pack_vnni_transposed(KT, lay.seq16(), base + (H + g) * hd, ld, T, hd);
    bf16_pack_vnni(Vv, lay.hd16(), base + (H + KV + g) * hd, ld, T, hd);
    for (int64_t i0 = 0; i0 < T; i0 += kBlockQ) {
      const int64_t nq = std::min(kBlockQ, T - i0), key_end = i0 + nq;
      std::fill_n(m, nq, kNegInf);
      std::fill_n(l, nq, 0.0f);
      for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
        const int64_t nk = std::min(kBlockK, key_end - k0);
        // Query i0 + i sees keys up to itself: row i needs columns j < i + diag, and P's row is 0 from there.
        const int64_t diag = i0 - k0 + 1;
        bf16_tile_gemm(nq, nk, hd, scale, Qr + i0 * lay.pairs(), lay.pairs(), 1, KT + k0, lay.seq16(), 0.0f, S,
                       kBlockK, {CausalSkip::Kind::OutputsFrom, diag});
        for (int64_t i = 0; i < nq; ++i)
          detail::online_softmax_row(S + i * kBlockK, nk, i + diag, m[i], l[i], O + i * hd, hd, k0 == 0);
        bf16_pack_rows(P, kBlockK / 2, S, kBlockK, nq, nk);
        bf16_tile_gemm(nq, hd, nk, 1.0f, P, kBlockK / 2, 1, Vv + k0 / 2 * lay.hd16(), lay.hd16(), 1.0f, O, hd,
                       {CausalSkip::Kind::ZeroKFrom, diag});
      }
      for (int64_t i = 0; i < nq; ++i) {
        const float inv = 1.0f / l[i];
        float* dst = out + (b * T + i0 + i) * ldo + h * hd;
#pragma omp simd
        for (int64_t c = 0; c < hd; ++c) dst[c] = O[i * hd + c] * inv;
        lse[(b * H + h) * T + i0 + i] = m[i] + std::log(l[i]);
      }
    }
  });
}

void attention_backward_bf16(float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                             const AttentionDims& d) {
  if (!detail::bf16_tile_gemm_supported()) return attention_backward(dqkv, dout, out, lse, qkv, d);
  detail::check_attention_dims(d, "attention_backward_bf16");
  const int64_t B = d.batch, T = d.seq, H = d.n_heads, KV = d.n_kv_heads, hd = d.head_dim;
  const int64_t ld = (H + 2 * KV) * hd, ldo = H * hd, group = H / KV;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const HeadLayout lay{T, hd};
  constexpr int64_t kBlockWords = kBlockQ / 2 * kBlockK;  // a 64 x 256 block in bf16, any of the layouts
  // One task per (batch, kv head): it owns dK/dV of that kv head and dQ of its query heads, so nothing races.
  detail::for_each_attention_task(B, KV, B * T * T * H * hd >= (1 << 20), [&](int64_t b, int64_t g) {
    ScratchCarver scratch({lay.transposed_words(), lay.vnni_words(), lay.transposed_words(), lay.rows_words(),
                           lay.vnni_words(), lay.rows_words(), lay.vnni_words(), kBlockWords, kBlockWords, kBlockWords,
                           kBlockQ * kBlockK, kBlockQ * kBlockK, kBlockQ});
    auto* KT = scratch.take<uint32_t>(lay.transposed_words());  // K^T: B of S = Q K^T
    auto* Kv = scratch.take<uint32_t>(lay.vnni_words());        // K: B of dQ += dS K
    auto* VT = scratch.take<uint32_t>(lay.transposed_words());  // V^T: B of dP = dO V^T
    auto* Qr = scratch.take<uint32_t>(lay.rows_words());        // Q rows: A of S
    auto* Qv = scratch.take<uint32_t>(lay.vnni_words());        // Q: B of dK += dS^T Q
    auto* dOr = scratch.take<uint32_t>(lay.rows_words());       // dO rows: A of dP
    auto* dOv = scratch.take<uint32_t>(lay.vnni_words());       // dO: B of dV += P^T dO
    auto* Pv = scratch.take<uint32_t>(kBlockWords);             // P, pairs along queries: A (as P^T) of dV
    auto* dSr = scratch.take<uint32_t>(kBlockWords);            // dS rows: A of dQ
    auto* dSv = scratch.take<uint32_t>(kBlockWords);            // dS, pairs along queries: A (as dS^T) of dK
    float* P = scratch.take<float>(kBlockQ * kBlockK);
    float* dP = scratch.take<float>(kBlockQ * kBlockK);
    float* D = scratch.take<float>(kBlockQ);
    const float* base = qkv + b * T * ld;
    float* dbase = dqkv + b * T * ld;
    float* dK = dbase + (H + g) * hd;
    float* dV = dbase + (H + KV + g) * hd;
    bf16_pack_vnni_transposed(KT, lay.seq16(), base + (H + g) * hd, ld, T, hd);
    bf16_pack_vnni(Kv, lay.hd16(), base + (H + g) * hd, ld, T, hd);
    bf16_pack_vnni_transposed(VT, lay.seq16(), base + (H + KV + g) * hd, ld, T, hd);
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float* O = out + b * T * ldo + h * hd;
      const float* dO = dout + b * T * ldo + h * hd;
      const float* L = lse + (b * H + h) * T;
      float* dQ = dbase + h * hd;
      bf16_pack_rows(Qr, lay.pairs(), base + h * hd, ld, T, hd);
      bf16_pack_vnni(Qv, lay.hd16(), base + h * hd, ld, T, hd);
      bf16_pack_rows(dOr, lay.pairs(), dO, ldo, T, hd);
      bf16_pack_vnni(dOv, lay.hd16(), dO, ldo, T, hd);
      for (int64_t i0 = 0; i0 < T; i0 += kBlockQ) {
        const int64_t nq = std::min(kBlockQ, T - i0);
        detail::output_grad_dots(D, O + i0 * ldo, dO + i0 * ldo, ldo, nq, hd);
        const int64_t key_end = i0 + nq;
        for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
          const int64_t nk = std::min(kBlockK, key_end - k0), nk16 = round_up(nk, 16);
          // P = exp(scale Q K^T - lse), masked; dP = dO V^T; dS = P (dP - D). As in the forward, query
          // row i needs key columns j < i + diag; P and dS are 0 past them (and P^T, dS^T before them).
          const int64_t diag = i0 - k0 + 1;
          bf16_tile_gemm(nq, nk, hd, scale, Qr + i0 * lay.pairs(), lay.pairs(), 1, KT + k0, lay.seq16(), 0.0f, P,
                         kBlockK, {CausalSkip::Kind::OutputsFrom, diag});
          bf16_tile_gemm(nq, nk, hd, 1.0f, dOr + i0 * lay.pairs(), lay.pairs(), 1, VT + k0, lay.seq16(), 0.0f, dP,
                         kBlockK, {CausalSkip::Kind::OutputsFrom, diag});
          for (int64_t i = 0; i < nq; ++i)
            detail::softmax_backward_row(P + i * kBlockK, dP + i * kBlockK, nk, i + diag, L[i0 + i], D[i]);
          bf16_pack_vnni(Pv, nk16, P, kBlockK, nq, nk);
          bf16_pack_rows(dSr, kBlockK / 2, dP, kBlockK, nq, nk);
          bf16_pack_vnni(dSv, nk16, dP, kBlockK, nq, nk);
          // dV += P^T dO;  dQ += scale dS K;  dK += scale dS^T Q. Nothing is zeroed first: a row's first
          // contribution overwrites (beta 0). dQ's rows all get theirs from the first key block; the rows
          // of dK/dV from key k0 + r on get theirs from the query block that holds k0 + r, in the group's
          // first head (the key block grows by the query block's rows as i0 moves along).
          const int64_t fresh_from = h == g * group ? std::clamp<int64_t>(i0 - k0, 0, nk) : nk;
          for (auto [r0, r1, beta] : {std::tuple{int64_t(0), fresh_from, 1.0f}, std::tuple{fresh_from, nk, 0.0f}}) {
            if (r0 == r1) continue;
            // key r (row r - r0 here) sees the queries q >= r + 1 - diag
            const CausalSkip after_key{CausalSkip::Kind::ZeroKBefore, r0 + 1 - diag};
            bf16_tile_gemm(r1 - r0, hd, nq, 1.0f, Pv + r0, 1, nk16, dOv + i0 / 2 * lay.hd16(), lay.hd16(), beta,
                           dV + (k0 + r0) * ld, ld, after_key);
            bf16_tile_gemm(r1 - r0, hd, nq, scale, dSv + r0, 1, nk16, Qv + i0 / 2 * lay.hd16(), lay.hd16(), beta,
                           dK + (k0 + r0) * ld, ld, after_key);
          }
          bf16_tile_gemm(nq, hd, nk, scale, dSr, kBlockK / 2, 1, Kv + k0 / 2 * lay.hd16(), lay.hd16(),
                         k0 == 0 ? 0.0f : 1.0f, dQ + i0 * ld, ld, {CausalSkip::Kind::ZeroKFrom, diag});
        }
      }
    }
  });
}

}  // namespace tensorpar
