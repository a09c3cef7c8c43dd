#include "tensorpar/kernels/quantized_matmul.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "tensorpar/core/error.hpp"

// GCC 12 warns inside its own AVX-512 headers (the _mm512_undefined_* operands of cvtepi32_ps,
// inserti64x4, shuffle_i64x2), not about this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tensorpar {

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32") return WeightFormat::F32;
  if (name == "int8") return WeightFormat::Int8;
  if (name == "int4") return WeightFormat::Int4;
  throw ConfigError(fmt::format("--weights '{}' is not a weight format; use f32, int8 or int4", name));
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::Int8: return "int8";
    case WeightFormat::Int4: return "int4";
  }
  return "?";
}

namespace {

void check_block_multiple(int64_t K, const char* what) {
  TP_CHECK(K > 0 && K % kQuantBlock == 0, ShapeError,
           "{}: the reduction dimension K={} is not a positive multiple of the {}-weight quantization block; "
           "quantized weights need every (per-partition) input dimension to be a multiple of {}",
           what, K, kQuantBlock, kQuantBlock);
}

// One Q8_0 block: q[32] = round(x / d), d = max|x| / 127 (0 for an all-zero block).
inline float quantize_block_q8(int8_t* q, const float* x) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) {
    const long v = std::lrintf(x[i] * id);
    q[i] = int8_t(std::clamp<long>(v, -127, 127));
  }
  return d;
}

// One Q4_0 block as ggml: d = m / -8 with m the element of largest magnitude (so m itself maps to
// nibble 0), nibble = min(15, floor(x / d + 8.5)).
inline float quantize_block_q4(uint8_t* packed, const float* x) {
  float amax = 0.0f, m = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  const float d = m / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQuantBlock / 2; ++i) {
    const int lo = std::min(15, int(std::floor(x[i] * id + 8.5f)));
    const int hi = std::min(15, int(std::floor(x[i + 16] * id + 8.5f)));
    packed[i] = uint8_t(std::max(lo, 0) | (std::max(hi, 0) << 4));
  }
  return d;
}

// The signed weights of block b of row n (Int4: nibble - 8), as int8[32].
inline void weight_block_int8(int8_t* out, const QuantizedWeight& w, int64_t n, int64_t b) {
  if (w.format == WeightFormat::Int8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(w.quants.data()) + n * w.cols + b * kQuantBlock;
    std::copy(q, q + kQuantBlock, out);
  } else {
    const uint8_t* p = w.quants.data() + n * (w.cols / 2) + b * (kQuantBlock / 2);
    for (int i = 0; i < kQuantBlock / 2; ++i) {
      out[i] = int8_t((p[i] & 0x0F) - 8);
      out[i + 16] = int8_t((p[i] >> 4) - 8);
    }
  }
}

// Scalar: sum over blocks, in order, of (d_w * d_x) * (integer dot of the block).
float row_dot_reference(const QuantizedWeight& w, int64_t n, const int8_t* xq, const float* xd) {
  const int64_t nb = w.blocks_per_row();
  const float* wd = w.scales.data() + n * nb;
  float sum = 0.0f;
  int8_t wq[kQuantBlock];
  for (int64_t b = 0; b < nb; ++b) {
    weight_block_int8(wq, w, n, b);
    int32_t dot = 0;
    for (int i = 0; i < kQuantBlock; ++i) dot += int32_t(wq[i]) * int32_t(xq[b * kQuantBlock + i]);
    sum += (wd[b] * xd[b]) * float(dot);
  }
  return sum;
}

// vpdpbusd multiplies unsigned by signed bytes: feed it |x| and w with x's sign moved onto it
// (as llama.cpp's _mm256_sign_epi8 trick); q is never -128, so negation cannot overflow.
// Returns 16 int32 lanes: lanes 0-7 sum to block 0's dot, lanes 8-15 to block 1's.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) inline __m512i dot2_blocks(__m512i wq, __m512i xq) {
  const __mmask64 negative = _mm512_movepi8_mask(xq);
  const __m512i ax = _mm512_abs_epi8(xq);
  const __m512i sw = _mm512_mask_sub_epi8(wq, negative, _mm512_setzero_si512(), wq);
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sw);
}

// Scales of two blocks spread over the two halves: (d0 x8, d1 x8).
__attribute__((target("avx512f,avx512dq"))) inline __m512 two_scales(float d0, float d1) {
  return _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512dq"))) float row_dot_q8_avx512(const QuantizedWeight& w,
                                                                                         int64_t n, const int8_t* xq,
                                                                                         const float* xd) {
  const int64_t nb = w.blocks_per_row();
  const int8_t* wq = reinterpret_cast<const int8_t*>(w.quants.data()) + n * w.cols;
  const float* wd = w.scales.data() + n * nb;
  __m512 acc = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    const __m512i dot = dot2_blocks(_mm512_loadu_si512(wq + b * kQuantBlock), _mm512_loadu_si512(xq + b * kQuantBlock));
    acc = _mm512_fmadd_ps(two_scales(wd[b] * xd[b], wd[b + 1] * xd[b + 1]), _mm512_cvtepi32_ps(dot), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  for (; b < nb; ++b) {  // an odd last block
    int32_t dot = 0;
    for (int i = 0; i < kQuantBlock; ++i) dot += int32_t(wq[b * kQuantBlock + i]) * int32_t(xq[b * kQuantBlock + i]);
    sum += (wd[b] * xd[b]) * float(dot);
  }
  return sum;
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512dq"))) float row_dot_q4_avx512(const QuantizedWeight& w,
                                                                                         int64_t n, const int8_t* xq,
                                                                                         const float* xd) {
  const int64_t nb = w.blocks_per_row();
  const uint8_t* wq = w.quants.data() + n * (w.cols / 2);
  const float* wd = w.scales.data() + n * nb;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m512i eight = _mm512_set1_epi8(8);
  __m512 acc = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    // 32 bytes = blocks b and b+1 packed: unpack to (lo_b, hi_b, lo_b+1, hi_b+1), i.e. the 64
    // elements in order, then subtract the offset 8
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + b * (kQuantBlock / 2)));
    const __m256i lo = _mm256_and_si256(packed, low4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
    __m512i q = _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);  // lo_b lo_b+1 hi_b hi_b+1
    q = _mm512_shuffle_i64x2(q, q, _MM_SHUFFLE(3, 1, 2, 0));           // lo_b hi_b lo_b+1 hi_b+1
    q = _mm512_sub_epi8(q, eight);
    const __m512i dot = dot2_blocks(q, _mm512_loadu_si512(xq + b * kQuantBlock));
    acc = _mm512_fmadd_ps(two_scales(wd[b] * xd[b], wd[b + 1] * xd[b + 1]), _mm512_cvtepi32_ps(dot), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  int8_t block[kQuantBlock];
  for (; b < nb; ++b) {
    weight_block_int8(block, w, n, b);
    int32_t dot = 0;
    for (int i = 0; i < kQuantBlock; ++i) dot += int32_t(block[i]) * int32_t(xq[b * kQuantBlock + i]);
    sum += (wd[b] * xd[b]) * float(dot);
  }
  return sum;
}

// Quantized activations of the current call; grown once, reused (decode calls this per layer per token).
struct ActivationScratch {
  std::vector<int8_t> q;
  std::vector<float> d;
};
ActivationScratch& activation_scratch() {
  thread_local ActivationScratch s;
  return s;
}

template <typename RowDot>
void matmul_rows(float* out, const float* inp, int64_t ld_inp, const QuantizedWeight& w, int64_t M, RowDot row_dot) {
  TP_CHECK(!w.empty(), ShapeError, "quantized_matmul: the weight is not quantized");
  TP_CHECK(ld_inp >= w.cols, ShapeError, "quantized_matmul: ld_inp={} is smaller than K={}", ld_inp, w.cols);
  const int64_t N = w.rows, K = w.cols, nb = w.blocks_per_row();
  ActivationScratch& s = activation_scratch();
  s.q.resize(size_t(M * K));
  s.d.resize(size_t(M * nb));
  quantize_activations(s.q.data(), s.d.data(), inp, ld_inp, M, K);
  const int8_t* xq = s.q.data();
  const float* xd = s.d.data();
  // over output rows: each weight row is read once and used for all M activation rows
#pragma omp parallel for schedule(static) if (N * K * M >= (1 << 16))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m) out[m * N + n] = row_dot(w, n, xq + m * K, xd + m * nb);
}

}  // namespace

QuantizedWeight quantize_weight(WeightFormat format, const float* w, int64_t N, int64_t K) {
  TP_CHECK(format != WeightFormat::F32, ConfigError, "quantize_weight: f32 is not a quantized format");
  check_block_multiple(K, "quantize_weight");
  QuantizedWeight q;
  q.format = format;
  q.rows = N;
  q.cols = K;
  const int64_t nb = K / kQuantBlock;
  q.scales.resize(size_t(N * nb));
  q.quants.resize(size_t(format == WeightFormat::Int8 ? N * K : N * K / 2));
#pragma omp parallel for schedule(static) if (N * K >= (1 << 16))
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < nb; ++b) {
      const float* x = w + n * K + b * kQuantBlock;
      q.scales[size_t(n * nb + b)] =
          format == WeightFormat::Int8
              ? quantize_block_q8(reinterpret_cast<int8_t*>(q.quants.data()) + n * K + b * kQuantBlock, x)
              : quantize_block_q4(q.quants.data() + n * (K / 2) + b * (kQuantBlock / 2), x);
    }
  return q;
}

void dequantize_weight(float* out, const QuantizedWeight& w) {
  const int64_t nb = w.blocks_per_row();
  int8_t block[kQuantBlock];
  for (int64_t n = 0; n < w.rows; ++n)
    for (int64_t b = 0; b < nb; ++b) {
      weight_block_int8(block, w, n, b);
      const float d = w.scales[size_t(n * nb + b)];
      for (int i = 0; i < kQuantBlock; ++i) out[n * w.cols + b * kQuantBlock + i] = d * float(block[i]);
    }
}

void quantize_activations(int8_t* q, float* scales, const float* inp, int64_t ld_inp, int64_t M, int64_t K) {
  check_block_multiple(K, "quantize_activations");
  const int64_t nb = K / kQuantBlock;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < nb; ++b)
      scales[m * nb + b] = quantize_block_q8(q + m * K + b * kQuantBlock, inp + m * ld_inp + b * kQuantBlock);
}

bool quantized_matmul_has_vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}

void quantized_matmul(float* out, const float* inp, int64_t ld_inp, const QuantizedWeight& w, int64_t M) {
  if (!quantized_matmul_has_vnni()) return quantized_matmul_reference(out, inp, ld_inp, w, M);
  if (w.format == WeightFormat::Int8)
    matmul_rows(out, inp, ld_inp, w, M, row_dot_q8_avx512);
  else
    matmul_rows(out, inp, ld_inp, w, M, row_dot_q4_avx512);
}

void quantized_matmul_reference(float* out, const float* inp, int64_t ld_inp, const QuantizedWeight& w, int64_t M) {
  matmul_rows(out, inp, ld_inp, w, M, row_dot_reference);
}

}  // namespace tensorpar
