// Rotary position embeddings (RoPE), Hugging Face Llama convention ("rotate_half": the pairs are
// (i, i + head_dim/2), not interleaved). For i < hd/2 and angle = pos * theta^(-2i/hd):
//   x'[i] = x[i] cos - x[i + hd/2] sin;   x'[i + hd/2] = x[i + hd/2] cos + x[i] sin
#pragma once
#include <cstdint>
#include <vector>

namespace tensorpar {

// cos/sin of every (position, frequency) pair, computed once.
// Precision: inv_freq[i] = 1 / theta^(2i/hd) is rounded to f32 exactly as HF computes it; the angle
// pos * inv_freq[i] and its cos/sin are then evaluated in double and rounded to f32 once. (HF also
// rounds the angle to f32 before cos/sin; that differs from ours by < pos * 2^-24 rad, e.g. < 1e-5 at
// pos 128 — ours is the more accurate of the two.)
class RopeTable {
 public:
  RopeTable(int64_t head_dim, int64_t max_positions, double theta);
  // hd/2 values each for position pos in [0, max_positions).
  const float* cos(int64_t pos) const { return cos_.data() + pos * half_; }
  const float* sin(int64_t pos) const { return sin_.data() + pos * half_; }
  int64_t head_dim() const { return 2 * half_; }
  int64_t max_positions() const { return max_positions_; }

 private:
  int64_t half_, max_positions_;
  std::vector<float> cos_, sin_;  // (max_positions, hd/2)
};

// x: `rows` rows with row stride ld; each row holds n_heads heads of head_dim contiguous values from
// column 0. Row r is at position pos_offset + r % seq (rows are (batch, seq) flattened). In place.
void rope_forward(float* x, int64_t ld, int64_t rows, int64_t seq, int64_t pos_offset, int64_t n_heads,
                  const RopeTable& table);
// Backward of rope_forward: the inverse rotation (angle -> -angle), in place on dx (same layout as x).
void rope_backward(float* dx, int64_t ld, int64_t rows, int64_t seq, int64_t pos_offset, int64_t n_heads,
                   const RopeTable& table);

}  // namespace tensorpar
