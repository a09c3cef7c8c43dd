#include "tensorpar/kernels/bf16_tile_gemm.hpp"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <bit>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/bf16_tile_kernel.hpp"

namespace tensorpar::detail {
namespace {



float lower(uint32_t pair) { return std::bit_cast<float>(pair << 16); }
float upper(uint32_t pair) { return std::bit_cast<float>(pair & 0xffff0000u); }
uint32_t pair_of(float lo, float hi) { return uint32_t(float_to_bf16(lo).bits) | uint32_t(float_to_bf16(hi).bits) << 16; }

// Without AVX512-BF16: the same products of bf16 values, summed in f32.
void tile_gemm_scalar(int64_t m, int64_t n, int64_t kp, float alpha, const uint32_t* a, int64_t a_row, int64_t a_pair,
                      const uint32_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t p = 0; p < kp; ++p) {
        const uint32_t x = a[i * a_row + p * a_pair], y = b[p * ldb + j];
        s += lower(x) * lower(y) + upper(x) * upper(y);
      }
      float& out = c[i * ldc + j];
      out = alpha * s + (beta != 0.0f ? beta * out : 0.0f);
    }
}

bool has_bf16() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512bf16");
  return supported;
}

// 16 floats (those in mask; the rest read as 0) to 16 bf16 in the low 16 bits of 16 dwords.
TP_BF16_TARGET __m512i widened_bf16(const float* src, __mmask16 mask) {
  const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src));
  return _mm512_cvtepu16_epi32((__m256i)h);
}


TP_BF16_TARGET void pack_rows_avx512(uint32_t* dst, int64_t ld_pairs, const float* src, int64_t lds, int64_t rows,
                                     int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    auto* d = reinterpret_cast<uint16_t*>(dst + i * ld_pairs);
    const float* s = src + i * lds;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = first_n(cols - c);
      _mm256_mask_storeu_epi16(d + c, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, s + c)));
    }
    if (cols % 2) d[cols] = 0;
  }
}

TP_BF16_TARGET void pack_vnni_avx512(uint32_t* dst, int64_t ld, const float* src, int64_t lds, int64_t rows,
                                     int64_t cols) {
  for (int64_t p = 0; p < (rows + 1) / 2; ++p) {
    const float* r0 = src + 2 * p * lds;
    const bool has_odd = 2 * p + 1 < rows;
    for (int64_t j = 0; j < ld; j += 16) {
      const __mmask16 mask = first_n(cols - j);
      const __m512i lo = widened_bf16(r0 + j, mask);
      const __m512i hi = has_odd ? widened_bf16(r0 + lds + j, mask) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + p * ld + j, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

// Column j of the packing is row j of src in bf16 (whose 32-bit units are already the pairs): blocks
// of 16 rows x 16 pairs are converted and transposed in registers.
TP_BF16_TARGET void pack_vnni_transposed_avx512(uint32_t* dst, int64_t ld, const float* src, int64_t lds,
                                                int64_t rows, int64_t cols) {
  const int64_t pairs = (cols + 1) / 2;
  for (int64_t j0 = 0; j0 < ld; j0 += 16)
    for (int64_t q0 = 0; q0 < pairs; q0 += 16) {
      const __mmask16 lo = first_n(cols - 2 * q0), hi = first_n(cols - 2 * q0 - 16);
      __m512i r[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (j0 + i >= rows) {
          r[i] = _mm512_setzero_si512();
          continue;
        }
        const float* p = src + (j0 + i) * lds + 2 * q0;
        r[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, p + 16), _mm512_maskz_loadu_ps(lo, p));
      }
      transpose16x16(r);
      for (int64_t p = 0; p < std::min<int64_t>(16, pairs - q0); ++p) _mm512_storeu_si512(dst + (q0 + p) * ld + j0, r[p]);
    }
}

}  // namespace

bool bf16_tile_gemm_supported() { return has_bf16(); }

void bf16_tile_gemm(int64_t m, int64_t n, int64_t k, float alpha, const uint32_t* a, int64_t a_row, int64_t a_pair,
                    const uint32_t* b, int64_t ldb, float beta, float* c, int64_t ldc, CausalSkip skip) {
  if (m <= 0 || n <= 0) return;
  const int64_t kp = (k + 1) / 2;
  if (!has_bf16()) return tile_gemm_scalar(m, n, kp, alpha, a, a_row, a_pair, b, ldb, beta, c, ldc);
  using Kind = CausalSkip::Kind;
  // Column panels of 64 outside, row tiles inside: the panel of B (kp x 64 pairs, 32 KiB at kp = 128)
  // stays in L1 while the row tiles stream A.
  for (int64_t j0 = 0; j0 < n; j0 += 16 * kMaxVectors) {
    const int64_t panel_end = std::min<int64_t>(j0 + 16 * kMaxVectors, n);
    for (int64_t i0 = 0; i0 < m; i0 += kMaxRows) {
      const int64_t mr = std::min<int64_t>(kMaxRows, m - i0), last_row = i0 + mr - 1;
      // The tile's needed columns [j0, end) and pairs [p0, p1): the union over its rows.
      int64_t end = panel_end, p0 = 0, p1 = kp;
      if (skip.kind == Kind::OutputsFrom)
        end = std::min(panel_end, j0 + (last_row + skip.offset - j0 + 15) / 16 * 16);
      else if (skip.kind == Kind::ZeroKFrom)
        p1 = std::clamp<int64_t>((last_row + skip.offset + 1) / 2, 0, kp);
      else if (skip.kind == Kind::ZeroKBefore)
        p0 = std::clamp<int64_t>((i0 + skip.offset) / 2, 0, kp);
      if (end <= j0) continue;
      const int64_t nj = end - j0, nv = (nj + 15) / 16;
      kTiles[size_t(mr - 1)][size_t(nv - 1)](p0, std::max(p0, p1), alpha, a + i0 * a_row, a_row, a_pair, b + j0,
                                              ldb, beta, c + i0 * ldc + j0, ldc, first_n(nj - 16 * (nv - 1)), nullptr);
    }
  }
}

void bf16_pack_rows(uint32_t* dst, int64_t ld_pairs, const float* src, int64_t lds, int64_t rows, int64_t cols) {
  if (has_bf16()) return pack_rows_avx512(dst, ld_pairs, src, lds, rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < (cols + 1) / 2; ++p)
      dst[i * ld_pairs + p] = pair_of(src[i * lds + 2 * p], 2 * p + 1 < cols ? src[i * lds + 2 * p + 1] : 0.0f);
}

void bf16_pack_vnni(uint32_t* dst, int64_t ld, const float* src, int64_t lds, int64_t rows, int64_t cols) {
  TP_CHECK(ld % 16 == 0 && ld >= cols, ShapeError, "bf16_pack_vnni: ld={} must be a multiple of 16 and >= cols={}",
           ld, cols);
  if (has_bf16()) return pack_vnni_avx512(dst, ld, src, lds, rows, cols);
  for (int64_t p = 0; p < (rows + 1) / 2; ++p)
    for (int64_t j = 0; j < ld; ++j)
      dst[p * ld + j] = j < cols ? pair_of(src[2 * p * lds + j], 2 * p + 1 < rows ? src[(2 * p + 1) * lds + j] : 0.0f)
                                 : 0u;
}

void bf16_pack_vnni_transposed(uint32_t* dst, int64_t ld, const float* src, int64_t lds, int64_t rows,
                               int64_t cols) {
  TP_CHECK(ld % 16 == 0 && ld >= rows, ShapeError,
           "bf16_pack_vnni_transposed: ld={} must be a multiple of 16 and >= rows={}", ld, rows);
  if (has_bf16()) return pack_vnni_transposed_avx512(dst, ld, src, lds, rows, cols);
  for (int64_t p = 0; p < (cols + 1) / 2; ++p)
    for (int64_t j = 0; j < ld; ++j)
      dst[p * ld + j] = j < rows ? pair_of(src[j * lds + 2 * p], 2 * p + 1 < cols ? src[j * lds + 2 * p + 1] : 0.0f)
                                 : 0u;
}

}  // namespace tensorpar::detail
