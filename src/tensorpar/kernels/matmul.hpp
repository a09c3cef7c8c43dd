// Precision of the GEMMs of the linear layers, and the bf16 staging of their operands. In bf16
// mode the f32 master values are rounded to bf16 right before each GEMM (AVX512-BF16 instructions,
// f32 accumulation and output); norms, softmax, loss and the optimizer stay f32.
#pragma once
#include <cstdint>
#include <string>

#include "tensorpar/core/tensor.hpp"

namespace tensorpar {

enum class Precision { F32, BF16 };
Precision parse_precision(const std::string& name);  // "f32" | "bf16"; ConfigError otherwise
const char* precision_name(Precision p);

// A bf16 copy of an f32 matrix, in a buffer allocated once for the largest matrix it will hold.
class Bf16Operand {
 public:
  Bf16Operand() = default;
  Bf16Operand(int64_t max_rows, int64_t cols);
  // Rounds src (rows, cols; row stride ld) into the buffer, contiguous (rows, cols), and returns it.
  const bf16* load(const float* src, int64_t rows, int64_t cols, int64_t ld);
  const bf16* data() const { return buffer_.bf16_data(); }
  bf16* data() { return buffer_.bf16_data(); }  // for a producer that writes bf16 itself
  int64_t bytes() const { return int64_t(buffer_.nbytes()); }
  // The same buffer, not owned (layers sharing one activation set); must not outlive this one.
  Bf16Operand view() const {
    Bf16Operand v;
    v.buffer_ = buffer_.view();
    return v;
  }
  // Bytes of the buffer if this operand owns it, else 0: what it adds to the memory in use.
  int64_t owned_bytes() const { return buffer_.owns_data() ? bytes() : 0; }

 private:
  Tensor buffer_;
};

}  // namespace tensorpar
