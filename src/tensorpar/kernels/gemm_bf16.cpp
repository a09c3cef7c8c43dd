#include "tensorpar/kernels/gemm_bf16.hpp"

#include "tensorpar/core/profile.hpp"

#include <immintrin.h>

#include <bit>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/tensor.hpp"
#include "tensorpar/core/thread_chunk.hpp"
#include "tensorpar/kernels/bf16_panel_gemm.hpp"
#include "tensorpar/kernels/bf16_tile_gemm.hpp"
#include "tensorpar/kernels/elementwise.hpp"

namespace tensorpar {

namespace {

// One CPU engine and one in-order stream for the process. oneDNN CPU primitives run on the OpenMP
// threads of the calling thread; the stream only orders submissions, so sharing it is safe.
struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
Runtime& runtime() {
  static Runtime r;
  return r;
}

struct Key {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  uint32_t alpha_bits, beta_bits;  // bit patterns: -0.0f and NaN compare as the caller passed them
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 0xcbf29ce484222325ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; h ^= h >> 29; };
    mix(uint64_t(k.ta) | uint64_t(k.tb) << 1);
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) mix(uint64_t(v));
    mix(uint64_t(k.alpha_bits) << 32 | k.beta_bits);
    return size_t(h);
  }
};

struct Entry {
  dnnl::memory::desc a, b, c;
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

std::mutex g_cache_mutex;
std::unordered_map<Key, std::shared_ptr<const Entry>, KeyHash> g_cache;

using dt = dnnl::memory::data_type;

// Strides express the transposes and leading dimensions, so oneDNN reads the caller's buffers as
// they are (no packing copies on our side).
std::shared_ptr<const Entry> make_entry(const Key& k, float alpha, float beta) {
  auto e = std::make_shared<Entry>();
  // op(A)[m,k] = A[m*lda + k] or, transposed, A[k*lda + m].
  e->a = dnnl::memory::desc({k.M, k.K}, dt::bf16, k.ta ? dnnl::memory::dims{1, k.lda} : dnnl::memory::dims{k.lda, 1});
  e->b = dnnl::memory::desc({k.K, k.N}, dt::bf16, k.tb ? dnnl::memory::dims{1, k.ldb} : dnnl::memory::dims{k.ldb, 1});
  e->c = dnnl::memory::desc({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);  // C = alpha*A*B + beta*C_old
    attr.set_post_ops(ops);
  }
  e->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(e->a, e->b, e->c), attr, runtime().engine);
  e->prim = dnnl::matmul(e->pd);
  return e;
}

std::shared_ptr<const Entry> lookup(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                                    int64_t ldc, float alpha, float beta) {
  const Key key{ta == Trans::Yes, tb == Trans::Yes, M, N, K, lda, ldb, ldc, std::bit_cast<uint32_t>(alpha),
                std::bit_cast<uint32_t>(beta)};
  std::lock_guard lock(g_cache_mutex);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second;
  std::shared_ptr<const Entry> e;
  try {
    e = make_entry(key, alpha, beta);
  } catch (const dnnl::error& err) {
    throw Error(fmt::format("oneDNN bf16 matmul cannot be created for trans_a={} trans_b={} M={} N={} K={} lda={} "
                            "ldb={} ldc={}: {}",
                            key.ta, key.tb, M, N, K, lda, ldb, ldc, err.what()));
  }
  g_cache.emplace(key, e);
  return e;
}

void check_args(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  TP_CHECK(M >= 0 && N >= 0 && K >= 0, ShapeError, "gemm_bf16: negative size M={} N={} K={}", M, N, K);
  const int64_t a_cols = ta == Trans::Yes ? M : K, b_cols = tb == Trans::Yes ? K : N;
  TP_CHECK(lda >= std::max<int64_t>(1, a_cols), ShapeError, "gemm_bf16: lda={} is smaller than the {} columns of A",
           lda, a_cols);
  TP_CHECK(ldb >= std::max<int64_t>(1, b_cols), ShapeError, "gemm_bf16: ldb={} is smaller than the {} columns of B",
           ldb, b_cols);
  TP_CHECK(ldc >= std::max<int64_t>(1, N), ShapeError, "gemm_bf16: ldc={} is smaller than N={}", ldc, N);
}

// oneDNN 2.7 (Debian 12) creates bf16 matmuls only for AVX-512 cores. Elsewhere (an AVX2-only
// Zen 3, say) every GEMM here widens its bf16 operands to f32 and runs the f32 GEMM: a product of two
// bf16 values is exact in f32, so the result differs from a bf16 kernel's only in summation order.
bool onednn_has_bf16_matmul() {
  static const bool has = [] {
    try {
      const dnnl::memory::desc a({2, 2}, dt::bf16, dnnl::memory::dims{2, 1});
      const dnnl::memory::desc c({2, 2}, dt::f32, dnnl::memory::dims{2, 1});
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, a, c), runtime().engine);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}

// src (rows x cols, leading dimension ld) widened into dst (rows x cols, contiguous): exact.
void widen(float* dst, const bf16* src, int64_t rows, int64_t cols, int64_t ld) {
  if (ld == cols) return convert_bf16_to_f32(dst, src, rows * cols);
  for (int64_t r = 0; r < rows; ++r) convert_bf16_to_f32(dst + r * cols, src + r * ld, cols);
}

// Per-thread scratch for widened operands; it grows to the largest call and is then reused.
float* widen_scratch(int slot, int64_t n) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& b = buffers[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

bool has_avx512_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) void convert_f32_to_bf16_avx512(bf16* dst,
                                                                                              const float* src,
                                                                                              int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // Two 16-lane conversions packed into one 512-bit store.
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), (__m512i)v);
  }
  for (; i < n; i += 16) {
    const int64_t left = n - i;
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i));
    _mm256_mask_storeu_epi16(reinterpret_cast<void*>(dst + i), mask, (__m256i)v);
  }
}

}  // namespace

void gemm_bf16(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A,
               int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  TP_PROFILE_SCOPE("gemm bf16 (all)");
  check_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // oneDNN rejects empty reductions; the product is zero
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  if (!onednn_has_bf16_matmul()) {
    const int64_t a_rows = trans_a == Trans::Yes ? K : M, a_cols = trans_a == Trans::Yes ? M : K;
    const int64_t b_rows = trans_b == Trans::Yes ? N : K, b_cols = trans_b == Trans::Yes ? K : N;
    float* a = widen_scratch(0, a_rows * a_cols);
    float* b = widen_scratch(1, b_rows * b_cols);
    widen(a, A, a_rows, a_cols, lda);
    widen(b, B, b_rows, b_cols, ldb);
    return gemm(trans_a, trans_b, M, N, K, alpha, a, a_cols, b, b_cols, beta, C, ldc);
  }
  const std::shared_ptr<const Entry> e = lookup(trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta);
  Runtime& rt = runtime();
  // Wrapping user pointers in dnnl::memory costs a small allocation, negligible against the GEMM.
  dnnl::memory a(e->a, rt.engine, const_cast<bf16*>(A));
  dnnl::memory b(e->b, rt.engine, const_cast<bf16*>(B));
  dnnl::memory c(e->c, rt.engine, C);
  try {
    e->prim.execute(rt.stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    rt.stream.wait();
  } catch (const dnnl::error& err) {
    throw Error(fmt::format("oneDNN bf16 matmul failed for M={} N={} K={}: {}", M, N, K, err.what()));
  }
}

namespace {

// A matmul whose B operand the kernels read in their own blocked layout (format_tag::any), the
// buffer for B in that layout, and the reorder that fills it from B's plain layout.
struct PackedBMatmul {
  dnnl::matmul prim;
  dnnl::memory b_packed;
  dnnl::reorder repack;
};

PackedBMatmul make_packed_b_matmul(const dnnl::memory::desc& a, const dnnl::memory::desc& b_plain,
                                   const dnnl::memory::desc* bias, const dnnl::memory::desc& c,
                                   const dnnl::primitive_attr& attr = {}) {
  Runtime& rt = runtime();
  const dnnl::memory::desc b_any(b_plain.dims(), dt::bf16, dnnl::memory::format_tag::any);
  const dnnl::matmul::primitive_desc pd(bias ? dnnl::matmul::desc(a, b_any, *bias, c) : dnnl::matmul::desc(a, b_any, c),
                                        attr, rt.engine);
  return {dnnl::matmul(pd), dnnl::memory(pd.weights_desc(), rt.engine),
          dnnl::reorder(dnnl::reorder::primitive_desc(rt.engine, b_plain, rt.engine, pd.weights_desc()))};
}

}  // namespace

// Our panel GEMM (bf16_panel_gemm.hpp) where the CPU has AVX512-BF16 and A's rows hold whole pairs
// (K even); oneDNN's matmul otherwise.
struct PackedBf16Gemm::State {
  int64_t M = 0, N = 0, K = 0, ldb = 0;
  Trans trans_b = Trans::No;
  bool packed = false, with_bias = false;
  bool panels = false;
  bool widened = false;  // no bf16 matmul in oneDNN for this CPU: B widened to f32, the f32 GEMM
  Tensor b_panels;       // 32-bit words, 64-byte aligned
  Tensor b_f32;          // widened: B as given (K x N, or N x K when trans_b), contiguous
  uint32_t* words() { return static_cast<uint32_t*>(b_panels.raw()); }
  const uint32_t* words() const { return static_cast<const uint32_t*>(b_panels.raw()); }
  dnnl::memory::desc a, b_plain, c, bias;
  PackedBMatmul matmul;
};

PackedBf16Gemm::PackedBf16Gemm(Trans trans_b, int64_t M, int64_t N, int64_t K, int64_t ldb, bool with_bias) {
  check_args(Trans::No, trans_b, M, N, K, K, ldb, N);
  TP_CHECK(M > 0 && N > 0 && K > 0, ShapeError, "PackedBf16Gemm: empty problem M={} N={} K={}", M, N, K);
  auto s = std::make_shared<State>();
  s->M = M;
  s->N = N;
  s->K = K;
  s->ldb = ldb;
  s->trans_b = trans_b;
  s->with_bias = with_bias;
  s->panels = detail::bf16_tile_gemm_supported() && K % 2 == 0;
  if (s->panels) {
    s->b_panels = Tensor({detail::bf16_panels_size(K, N)}, DType::F32);
    state_ = std::move(s);
    return;
  }
  if (!onednn_has_bf16_matmul()) {
    s->widened = true;
    s->b_f32 = Tensor({K * N}, DType::F32);
    state_ = std::move(s);
    return;
  }
  s->a = dnnl::memory::desc({M, K}, dt::bf16, dnnl::memory::dims{K, 1});
  s->b_plain = dnnl::memory::desc({K, N}, dt::bf16,
                                  trans_b == Trans::Yes ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
  s->c = dnnl::memory::desc({M, N}, dt::f32, dnnl::memory::dims{N, 1});
  if (with_bias) s->bias = dnnl::memory::desc({1, N}, dt::f32, dnnl::memory::dims{N, 1});
  try {
    // the matmul picks B's layout (its kernels' blocked one), which pack() produces
    s->matmul = make_packed_b_matmul(s->a, s->b_plain, with_bias ? &s->bias : nullptr, s->c);
  } catch (const dnnl::error& err) {
    throw Error(fmt::format("oneDNN pre-packed bf16 matmul cannot be created for M={} N={} K={}: {}", M, N, K,
                            err.what()));
  }
  state_ = std::move(s);
}

int64_t PackedBf16Gemm::rows() const { return state_ ? state_->M : 0; }

int64_t PackedBf16Gemm::bytes() const {
  if (!state_) return 0;
  if (state_->panels) return int64_t(state_->b_panels.nbytes());
  if (state_->widened) return int64_t(state_->b_f32.nbytes());
  return int64_t(state_->matmul.b_packed.get_desc().get_size());
}

void PackedBf16Gemm::pack(const bf16* B) {
  TP_PROFILE_SCOPE("gemm bf16 (all)");
  TP_PROFILE_SCOPE("gemm bf16: W repack");
  TP_CHECK(state_, ConfigError, "PackedBf16Gemm::pack on an empty object");
  State& s = *state_;
  if (s.panels) {
    if (s.trans_b == Trans::Yes)
      detail::bf16_pack_panels_transposed(s.words(), B, s.ldb, s.K, s.N);
    else
      detail::bf16_pack_panels(s.words(), B, s.ldb, s.K, s.N);
    s.packed = true;
    return;
  }
  if (s.widened) {
    if (s.trans_b == Trans::Yes)
      widen(s.b_f32.f32(), B, s.N, s.K, s.ldb);
    else
      widen(s.b_f32.f32(), B, s.K, s.N, s.ldb);
    s.packed = true;
    return;
  }
  Runtime& rt = runtime();
  dnnl::memory plain(state_->b_plain, rt.engine, const_cast<bf16*>(B));
  state_->matmul.repack.execute(rt.stream, plain, state_->matmul.b_packed);
  rt.stream.wait();
  state_->packed = true;
}

bool PackedBf16Gemm::pack_weight(PackedBf16Gemm& forward, PackedBf16Gemm& backward, const float* w) {
  if (forward.empty() || backward.empty()) return false;
  State& f = *forward.state_;
  State& b = *backward.state_;
  const bool shapes = f.trans_b == Trans::Yes && b.trans_b == Trans::No && f.N == b.K && f.K == b.N &&
                      f.ldb == f.K && b.ldb == b.N;
  if (!f.panels || !b.panels || !shapes) return false;
  detail::bf16_pack_weight_panels(f.words(), b.words(), w, f.N, f.K);
  f.packed = b.packed = true;
  return true;
}

void PackedBf16Gemm::run(const bf16* A, float* C, const float* bias) const {
  TP_PROFILE_SCOPE("gemm bf16 (all)");
  TP_CHECK(state_ && state_->packed, ConfigError, "PackedBf16Gemm::run before pack()");
  TP_CHECK((bias != nullptr) == state_->with_bias, ConfigError,
           "PackedBf16Gemm::run: the GEMM was built {} a bias and run {} one", state_->with_bias ? "with" : "without",
           bias ? "with" : "without");
  const State& s = *state_;
  if (s.panels)
    return detail::bf16_panel_gemm(s.M, s.N, s.K, reinterpret_cast<const uint32_t*>(A), s.K / 2, 1,
                                   s.words(), bias, 0.0f, C, s.N);
  if (s.widened) {
    float* a = widen_scratch(0, s.M * s.K);
    widen(a, A, s.M, s.K, s.K);
    gemm(Trans::No, s.trans_b, s.M, s.N, s.K, 1.0f, a, s.K, s.b_f32.f32(),
         s.trans_b == Trans::Yes ? s.K : s.N, 0.0f, C, s.N);
    if (bias) add_bias(C, bias, s.M, s.N);
    return;
  }
  Runtime& rt = runtime();
  dnnl::memory a(state_->a, rt.engine, const_cast<bf16*>(A));
  dnnl::memory c(state_->c, rt.engine, C);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, state_->matmul.b_packed}, {DNNL_ARG_DST, c}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(state_->bias, rt.engine, const_cast<float*>(bias)));
  state_->matmul.prim.execute(rt.stream, args);
  rt.stream.wait();
}

namespace {

// Per shape: with AVX512-BF16, the layouts our panel GEMM reads (dY^T's pairs of tokens, X in
// panels); otherwise oneDNN's matmul with X packed.
struct WeightGradEntry {
  std::mutex mutex;  // the packed buffers are per shape: one call at a time uses them
  bool panels = false;
  Tensor dy_pairs, x_panels;  // 32-bit words, 64-byte aligned
  dnnl::memory::desc dy, x_plain, dw;
  PackedBMatmul matmul;  // B is X
};

std::mutex g_weight_grad_mutex;
std::unordered_map<Key, std::shared_ptr<WeightGradEntry>, KeyHash> g_weight_grad_cache;

std::shared_ptr<WeightGradEntry> weight_grad_entry(int64_t M, int64_t N, int64_t K) {
  const Key key{true, false, M, N, K, M, N, N, std::bit_cast<uint32_t>(1.0f), std::bit_cast<uint32_t>(1.0f)};
  std::lock_guard lock(g_weight_grad_mutex);
  auto it = g_weight_grad_cache.find(key);
  if (it != g_weight_grad_cache.end()) return it->second;
  auto e = std::make_shared<WeightGradEntry>();
  e->panels = detail::bf16_tile_gemm_supported();
  if (e->panels) {
    e->dy_pairs = Tensor({(K + 1) / 2 * M}, DType::F32);
    e->x_panels = Tensor({detail::bf16_panels_size(K, N)}, DType::F32);
    g_weight_grad_cache.emplace(key, e);
    return e;
  }
  try {
    e->dy = dnnl::memory::desc({M, K}, dt::bf16, dnnl::memory::dims{1, M});  // dY^T: dY read transposed
    e->x_plain = dnnl::memory::desc({K, N}, dt::bf16, dnnl::memory::dims{N, 1});
    e->dw = dnnl::memory::desc({M, N}, dt::f32, dnnl::memory::dims{N, 1});
    dnnl::primitive_attr attr;
    dnnl::post_ops ops;
    ops.append_sum(1.0f);  // accumulate into dW
    attr.set_post_ops(ops);
    e->matmul = make_packed_b_matmul(e->dy, e->x_plain, nullptr, e->dw, attr);
  } catch (const dnnl::error& err) {
    throw Error(fmt::format("oneDNN bf16 weight-gradient matmul cannot be created for M={} N={} K={}: {}", M, N, K,
                            err.what()));
  }
  g_weight_grad_cache.emplace(key, e);
  return e;
}

}  // namespace

void weight_grad_bf16(int64_t M, int64_t N, int64_t K, const bf16* dy, const bf16* x, float* dw) {
  TP_PROFILE_SCOPE("gemm bf16 (all)");
  TP_CHECK(M >= 0 && N >= 0 && K >= 0, ShapeError, "weight_grad_bf16: negative size M={} N={} K={}", M, N, K);
  if (M == 0 || N == 0 || K == 0) return;  // nothing to add
  if (!detail::bf16_tile_gemm_supported() && !onednn_has_bf16_matmul())  // gemm_bf16 widens to f32
    return gemm_bf16(Trans::Yes, Trans::No, M, N, K, 1.0f, dy, M, x, N, 1.0f, dw, N);
  const std::shared_ptr<WeightGradEntry> e = weight_grad_entry(M, N, K);
  Runtime& rt = runtime();
  std::lock_guard lock(e->mutex);
  if (e->panels) {
    TP_PROFILE_SCOPE("gemm bf16: dW += dY^T X");
    auto* dy_pairs = static_cast<uint32_t*>(e->dy_pairs.raw());
    auto* x_panels = static_cast<uint32_t*>(e->x_panels.raw());
    {
      TP_PROFILE_SCOPE("gemm bf16: dW, X repack");
      detail::bf16_pack_panels(x_panels, x, N, K, N);
    }
    {
      TP_PROFILE_SCOPE("gemm bf16: dW, dY^T pairs");
      detail::bf16_pack_pairs(dy_pairs, dy, M, K, M);
    }
    detail::bf16_panel_gemm(M, N, K, dy_pairs, 1, M, x_panels, nullptr, 1.0f, dw, N);
    return;
  }
  dnnl::memory x_plain(e->x_plain, rt.engine, const_cast<bf16*>(x));
  dnnl::memory dy_mem(e->dy, rt.engine, const_cast<bf16*>(dy));
  dnnl::memory dw_mem(e->dw, rt.engine, dw);
  TP_PROFILE_SCOPE("gemm bf16: dW += dY^T X");
  try {
    {  // the CPU stream runs a primitive to completion inside execute(), so the scope times it
      TP_PROFILE_SCOPE("gemm bf16: dW, X repack");
      e->matmul.repack.execute(rt.stream, x_plain, e->matmul.b_packed);
    }
    e->matmul.prim.execute(rt.stream,
                           {{DNNL_ARG_SRC, dy_mem}, {DNNL_ARG_WEIGHTS, e->matmul.b_packed}, {DNNL_ARG_DST, dw_mem}});
    rt.stream.wait();
  } catch (const dnnl::error& err) {
    throw Error(fmt::format("oneDNN bf16 weight-gradient matmul failed for M={} N={} K={}: {}", M, N, K, err.what()));
  }
}

std::string gemm_bf16_impl_name(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, int64_t lda,
                                int64_t ldb, int64_t ldc, float alpha, float beta) {
  check_args(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  TP_CHECK(M > 0 && N > 0 && K > 0, ShapeError, "gemm_bf16_impl_name: empty problem M={} N={} K={}", M, N, K);
  if (!onednn_has_bf16_matmul()) return "widened to f32: gemm (oneDNN has no bf16 matmul for this CPU)";
  return lookup(trans_a, trans_b, M, N, K, lda, ldb, ldc, alpha, beta)->pd.impl_info_str();
}

bool gemm_bf16_native() { return onednn_has_bf16_matmul(); }

int64_t gemm_bf16_cache_size() {
  std::lock_guard lock(g_cache_mutex);
  return int64_t(g_cache.size());
}

void convert_f32_to_bf16(bf16* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  const bool vector = has_avx512_bf16();
  // A memory-bound pass: one thread leaves the rank's other cores idle when it runs on several.
  // Chunks of whole 32-value vectors per thread; each value is converted alone, so the split does
  // not change the result.
#pragma omp parallel if (n >= kParallelMinElements)
  {
    const ThreadRange range = thread_chunk(n, 32);
    const int64_t begin = range.begin, end = range.end;
    if (vector) {
      convert_f32_to_bf16_avx512(dst + begin, src + begin, end - begin);
    } else {
      for (int64_t i = begin; i < end; ++i) dst[i] = float_to_bf16(src[i]);
    }
  }
}

void convert_bf16_to_f32(float* dst, const bf16* src, int64_t n) {
  // A shift: the compiler vectorises this (vpmovzxwd + vpslld) for whatever ISA we build for.
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElements)
  for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(src[i].bits) << 16);
}

}  // namespace tensorpar
