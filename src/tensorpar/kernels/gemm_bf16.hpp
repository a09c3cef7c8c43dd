// Mixed-precision GEMM for bf16 training: bf16 operands, f32 accumulation and f32 output, plus the
// f32 <-> bf16 conversions around it. Same row-major convention as gemm() in gemm.hpp:
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
// with op(A) = A (A is [M,K], leading dimension lda) or A^T (A is [K,M]); likewise for B.
// gemm_bf16 is backed by the oneDNN matmul primitive (brgemm kernels with AVX512-BF16 / AMX where
// present); one primitive per distinct (trans, sizes, leading dims, alpha, beta) is created on first
// use and cached, so a training step re-creates nothing. The linear layers' GEMMs (PackedBf16Gemm,
// weight_grad_bf16) run our own kernel where the CPU has AVX512-BF16.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/kernels/gemm.hpp"

namespace tensorpar {

// A: op(A) is [M,K]; B: op(B) is [K,N]; C: [M,N] (f32, leading dimension ldc).
// Any alpha; any beta (beta != 0 becomes oneDNN's sum post-op, so C is read only then).
// Thread-safe; uses the OpenMP threads of the calling thread (see set_num_threads).
void gemm_bf16(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A,
               int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc);

// C[M,N] = A[M,K] * op(B)[K,N] with B packed once, by pack(); gemm_bf16 repacks B inside every call.
// For a B that several calls share while it does not change (a weight within a training step). With
// AVX512-BF16 and an even K, our panel GEMM (kernels/bf16_panel_gemm.hpp: 93-95% of the bf16 peak on
// gpt-bench's shapes where oneDNN reaches 86-92%) with B in its panels; otherwise oneDNN's matmul with
// B in its blocked layout (or, where oneDNN has no bf16 matmul, B widened to f32: gemm_bf16_native).
// A (M x K) bf16 and C (M x N) f32 are contiguous; B is read with trans_b and ldb as in gemm_bf16.
// Copies share the packed buffer.
class PackedBf16Gemm {
 public:
  PackedBf16Gemm() = default;
  // with_bias: run() takes a bias (N), added to every row of C inside the GEMM
  PackedBf16Gemm(Trans trans_b, int64_t M, int64_t N, int64_t K, int64_t ldb, bool with_bias = false);
  bool empty() const { return !state_; }
  int64_t rows() const;  // M
  void pack(const bf16* B);
  // A linear layer's weight w (f32, rows x cols, contiguous) for both of its GEMMs at once: `forward`
  // built with Trans::Yes, N = rows, K = ldb = cols, and `backward` with Trans::No, N = ldb = cols,
  // K = rows. Rounds w to bf16 and packs both in one pass over w when both are our panel GEMM and
  // returns true; returns false, packing nothing, otherwise (then round w and pack() each).
  static bool pack_weight(PackedBf16Gemm& forward, PackedBf16Gemm& backward, const float* w);
  void run(const bf16* A, float* C, const float* bias = nullptr) const;  // after pack(); bias iff with_bias
  int64_t bytes() const;                    // of the packed B

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// The weight gradient of a linear layer: dW[M,N] += dY^T X, dY (K tokens x M) and X (K x N) bf16 and
// contiguous, dW f32. gemm_bf16 with trans_a computes the same, but oneDNN's matmul copies X into its
// blocked layout piece by piece inside the kernel loop (per thread). Here the operands are packed
// once per call into buffers cached per shape: with AVX512-BF16, dY^T into pairs of tokens and X into
// the panels of our panel GEMM; otherwise X into oneDNN's layout for its matmul.
// Thread-safe (calls with the same shape take turns on the cached buffers).
void weight_grad_bf16(int64_t M, int64_t N, int64_t K, const bf16* dy, const bf16* x, float* dw);

// Name of the oneDNN implementation gemm_bf16 uses for this problem (e.g. "brg:avx512_core_bf16"),
// for benchmarks and logs: a "ref" or "gemm:ref" here means a slow fallback was chosen.
std::string gemm_bf16_impl_name(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, int64_t lda,
                                int64_t ldb, int64_t ldc, float alpha = 1.0f, float beta = 0.0f);

// False where oneDNN has no bf16 matmul for this CPU (oneDNN 2.7 has one only for AVX-512 cores):
// then gemm_bf16, PackedBf16Gemm and weight_grad_bf16 widen their bf16 operands to f32 (exactly) and
// run gemm(); results differ from a bf16 kernel's only in summation order, and run no faster than f32.
bool gemm_bf16_native();

// Number of primitives the gemm_bf16 cache holds (one per distinct problem seen so far).
int64_t gemm_bf16_cache_size();

// dst[i] = round-to-nearest-even bf16 of src[i]. With AVX512-BF16 this is vcvtneps2bf16, which
// flushes f32 denormal inputs (|x| < 2^-126) to signed zero; the scalar fallback (float_to_bf16)
// keeps them. All other values, including ties, Inf and NaN (quieted), convert identically.
// dst: (n) src: (n)
void convert_f32_to_bf16(bf16* dst, const float* src, int64_t n);

// dst[i] = src[i] widened exactly. dst: (n) src: (n)
void convert_bf16_to_f32(float* dst, const bf16* src, int64_t n);

}  // namespace tensorpar
