// Precision of the GEMMs of the linear layers, and the bf16 staging of their operands. In bf16
// mode the f32 master values are rounded to bf16 right before each GEMM (AVX512-BF16 instructions,
// f32 accumulation and output); norms, softmax, loss and the optimizer stay f32.
#pragma once
#include <cstdint>
#include <string>

#include "tensorpar/core/tensor.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"

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

// The bf16 copy of a linear layer's weight W (rows x cols, row-major) for the two GEMMs that read it in
// a step: Y = X W^T (forward) and dX = dY W (backward). load() rounds W (once per forward) and, when
// it runs on the token count the layer was built for, packs it for both GEMMs: in one pass from W
// where both run our panel GEMM (AVX512-BF16, even sizes), else for the forward GEMM, and the first
// backward_data() after it packs the rounded copy for the dX GEMM. Neither GEMM repacks W inside
// every call. Other token counts run gemm_bf16 on the rounded copy.
class Bf16Weight {
 public:
  Bf16Weight() = default;
  // fused_bias: the packed forward GEMM adds the bias (one pass over y fewer)
  Bf16Weight(int64_t rows, int64_t cols, int64_t packed_tokens, bool fused_bias = false);
  void load(const float* w, int64_t tokens);
  // y (tokens, rows) = x (tokens, cols) W^T (+ bias (rows) on every row if given), for the tokens of
  // the last load()
  void forward(const bf16* x, int64_t tokens, float* y, const float* bias = nullptr) const;
  // dx (tokens, cols) = dy (tokens, rows) W, for the tokens of the last load()
  void backward_data(const bf16* dy, int64_t tokens, float* dx);
  int64_t bytes() const { return plain_.bytes() + forward_.bytes() + backward_.bytes(); }

 private:
  Bf16Operand plain_;
  int64_t rows_ = 0, cols_ = 0, packed_tokens_ = 0;
  bool fused_bias_ = false;
  bool packed_ = false;           // the last load() packed the forward layout
  bool backward_packed_ = false;  // the dX layout holds the weight of the last load()
  bool plain_current_ = false;    // plain_ holds the weight of the last load() (not written when both
                                  // layouts were packed from it directly)
  PackedBf16Gemm forward_, backward_;
};

}  // namespace tensorpar
