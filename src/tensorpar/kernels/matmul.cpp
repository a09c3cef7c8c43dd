#include "tensorpar/kernels/matmul.hpp"

#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/elementwise.hpp"
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
  TP_PROFILE_SCOPE("f32 to bf16 operand");
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

Bf16Weight::Bf16Weight(int64_t rows, int64_t cols, int64_t packed_tokens, bool fused_bias)
    : plain_(rows, cols), rows_(rows), cols_(cols), packed_tokens_(packed_tokens), fused_bias_(fused_bias) {}

void Bf16Weight::load(const float* w, int64_t tokens) {
  TP_PROFILE_SCOPE("gemm bf16: W to bf16 + repack");
  packed_ = tokens == packed_tokens_ && tokens > 0;
  if (packed_ && forward_.empty()) {  // the first step: allocated once
    forward_ = PackedBf16Gemm(Trans::Yes, tokens, rows_, cols_, cols_, fused_bias_);
    backward_ = PackedBf16Gemm(Trans::No, tokens, cols_, rows_, cols_);
  }
  // Both layouts straight from w where our panel GEMM runs both: 8 bytes moved per weight instead of
  // 14 (round, then pack each from the bf16 copy). The rounded copy is then not written.
  plain_current_ = !(packed_ && PackedBf16Gemm::pack_weight(forward_, backward_, w));
  backward_packed_ = !plain_current_;
  if (!plain_current_) return;
  const bf16* wb = plain_.load(w, rows_, cols_, cols_);
  if (packed_) forward_.pack(wb);
}

void Bf16Weight::forward(const bf16* x, int64_t tokens, float* y, const float* bias) const {
  TP_CHECK(!bias || fused_bias_, ConfigError, "Bf16Weight::forward: a bias for a weight built without fused_bias");
  TP_PROFILE_SCOPE("gemm bf16: Y = X W^T");
  if (packed_ && tokens == packed_tokens_) return forward_.run(x, y, bias);
  TP_CHECK(plain_current_, ConfigError, "Bf16Weight::forward on {} tokens after load() on {}", tokens, packed_tokens_);
  gemm_bf16(Trans::No, Trans::Yes, tokens, rows_, cols_, 1.0f, x, cols_, plain_.data(), cols_, 0.0f, y, rows_);
  if (bias) add_bias(y, bias, tokens, rows_);
}

void Bf16Weight::backward_data(const bf16* dy, int64_t tokens, float* dx) {
  TP_PROFILE_SCOPE("gemm bf16: dX = dY W");
  if (packed_ && tokens == packed_tokens_) {
    if (!backward_packed_) backward_.pack(plain_.data());
    backward_packed_ = true;
    return backward_.run(dy, dx);
  }
  TP_CHECK(plain_current_, ConfigError, "Bf16Weight::backward_data on {} tokens after load() on {}", tokens,
           packed_tokens_);
  gemm_bf16(Trans::No, Trans::No, tokens, cols_, rows_, 1.0f, dy, rows_, plain_.data(), cols_, 0.0f, dx, cols_);
}

}  // namespace tensorpar
