// Blockwise-quantized weights for inference, as ggml's Q8_0 and Q4_0: every output row of a weight
// W (N, K) is cut along the reduction dimension K into blocks of 32 weights, each stored as small
// integers with one f32 scale. The matmul quantizes the activation rows the same way (Q8_0) and
// takes integer dot products per block (AVX-512 VNNI vpdpbusd), accumulating scale_w * scale_x *
// int_dot in f32. Decode (M = 1 .. batch rows) streams 9 (int8) or 5 (int4) bits per weight
// instead of 32.
//
// Layout (per output row n, contiguous, so the GEMV reads each row once front to back):
//   scales (N, K/32) f32
//   Int8: quants (N, K) int8, value = scale * q, q in [-127, 127]
//   Int4: quants (N, K/2) bytes; block j of row n is 16 bytes at n*K/2 + j*16; byte i holds element
//         i in its low nibble and element i+16 in its high nibble; value = scale * (nibble - 8).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tensorpar {

enum class WeightFormat { F32, Int8, Int4 };
WeightFormat parse_weight_format(const std::string& name);  // "f32" | "int8" | "int4"; ConfigError otherwise
const char* weight_format_name(WeightFormat f);

constexpr int64_t kQuantBlock = 32;  // weights per block (one scale)

struct QuantizedWeight {
  WeightFormat format = WeightFormat::F32;  // F32: empty (not quantized)
  int64_t rows = 0, cols = 0;               // N, K of the original (N, K) f32 matrix
  std::vector<float> scales;                // (N, K/32)
  std::vector<uint8_t> quants;              // (N, K) int8 or (N, K/2) packed nibbles

  bool empty() const { return format == WeightFormat::F32; }
  int64_t blocks_per_row() const { return cols / kQuantBlock; }
  int64_t bytes() const { return int64_t(scales.size() * sizeof(float) + quants.size()); }
};

// w (N, K) f32 → blockwise quantized. K must be a multiple of 32 (ShapeError otherwise: a block
// may not straddle rows or a tensor-parallel split). Q8_0: scale = max|w|/127, q = round(w/scale).
// Q4_0: scale = m/-8 with m the element of largest magnitude, q = min(15, floor(w/scale + 8.5)).
QuantizedWeight quantize_weight(WeightFormat format, const float* w, int64_t N, int64_t K);
// out (N, K) = the values the quantized weight stands for.
void dequantize_weight(float* out, const QuantizedWeight& w);

// Activations quantized per row in Q8_0 blocks: q (M, K) int8, scales (M, K/32); inp (M, K) with
// row stride ld_inp. Shared by the AVX-512 and reference kernels so both see the same integers.
void quantize_activations(int8_t* q, float* scales, const float* inp, int64_t ld_inp, int64_t M, int64_t K);

// out (M, N) = inp (M, K) · W^T with W quantized (N, K); inp row stride ld_inp (>= K).
// AVX-512 VNNI when the CPU has it, else the reference; OpenMP over output rows.
void quantized_matmul(float* out, const float* inp, int64_t ld_inp, const QuantizedWeight& w, int64_t M);
// Scalar reference: same activation quantization, integer block dots, blocks summed in order.
void quantized_matmul_reference(float* out, const float* inp, int64_t ld_inp, const QuantizedWeight& w, int64_t M);
// Whether quantized_matmul runs the AVX-512 VNNI kernel on this machine.
bool quantized_matmul_has_vnni();

}  // namespace tensorpar
