#include "tensorpar/kernels/matmul.hpp"

#include "tensorpar/kernels/gemm_bf16.hpp"

namespace tensorpar {

Precision parse_precision(const std::string& name) {
  if (name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  throw ConfigError(fmt::format("unknown precision '{}'; use f32 or bf16", name));
}

const char* precision_name(Precision p) { return p == Precision::F32 ? "f32" : "bf16"; }

Bf16Operand::Bf16Operand(int64_t max_rows, int64_t cols) : buffer_({max_rows, cols}, DType::BF16) {}

const bf16* Bf16Operand::load(const float* src, int64_t rows, int64_t cols, int64_t ld) {
  TP_CHECK(rows * cols <= buffer_.numel(), ShapeError, "bf16 operand of {} x {} exceeds its buffer of {} values",
           rows, cols, buffer_.numel());
  bf16* dst = buffer_.bf16_data();
  if (ld == cols) {
    convert_f32_to_bf16(dst, src, rows * cols);
  } else {
    for (int64_t r = 0; r < rows; ++r) convert_f32_to_bf16(dst + r * cols, src + r * ld, cols);
  }
  return dst;
}

}  // namespace tensorpar
