#include "tensorpar/kernels/rope.hpp"

#include <cmath>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

RopeTable::RopeTable(int64_t head_dim, int64_t max_positions, double theta)
    : half_(head_dim / 2), max_positions_(max_positions) {
  TP_CHECK(head_dim > 0 && head_dim % 2 == 0, ShapeError, "RopeTable: head_dim must be positive and even, got {}",
           head_dim);
  TP_CHECK(max_positions > 0, ShapeError, "RopeTable: max_positions must be positive, got {}", max_positions);
  TP_CHECK(theta > 0, ShapeError, "RopeTable: theta must be positive, got {}", theta);
  cos_.resize(size_t(max_positions * half_));
  sin_.resize(size_t(max_positions * half_));
  std::vector<float> inv_freq(static_cast<size_t>(half_));
  for (int64_t i = 0; i < half_; ++i)
    inv_freq[i] = float(1.0 / std::pow(theta, double(2 * i) / double(head_dim)));  // f32, as HF
  for (int64_t p = 0; p < max_positions; ++p)
    for (int64_t i = 0; i < half_; ++i) {
      const double angle = double(p) * double(inv_freq[i]);
      cos_[p * half_ + i] = float(std::cos(angle));
      sin_[p * half_ + i] = float(std::sin(angle));
    }
}

namespace {

// sign = +1 rotates by +angle (forward), -1 by -angle (backward: the transpose of a rotation).
void rope_apply(float* x, int64_t ld, int64_t rows, int64_t seq, int64_t pos_offset, int64_t n_heads,
                const RopeTable& table, float sign, const char* who) {
  const int64_t hd = table.head_dim(), half = hd / 2;
  TP_CHECK(rows >= 0 && seq > 0 && n_heads >= 0, ShapeError, "{}: need rows >= 0, seq > 0, n_heads >= 0; got {} {} {}",
           who, rows, seq, n_heads);
  TP_CHECK(ld >= n_heads * hd, ShapeError, "{}: row stride ld={} is less than n_heads*head_dim={}*{}", who, ld,
           n_heads, hd);
  const int64_t last_pos = pos_offset + (rows < seq ? rows : seq) - 1;
  TP_CHECK(pos_offset >= 0 && (rows == 0 || last_pos < table.max_positions()), ShapeError,
           "{}: positions {}..{} exceed the RoPE table ({} positions); build the table with max_positions > {}", who,
           pos_offset, last_pos, table.max_positions(), last_pos);
#pragma omp parallel for schedule(static) if (rows * n_heads * hd >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = pos_offset + r % seq;
    const float* c = table.cos(pos);
    const float* s = table.sin(pos);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* a = x + r * ld + h * hd;
      float* b = a + half;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = a[i], x2 = b[i], si = sign * s[i];
        a[i] = x1 * c[i] - x2 * si;
        b[i] = x2 * c[i] + x1 * si;
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, int64_t ld, int64_t rows, int64_t seq, int64_t pos_offset, int64_t n_heads,
                  const RopeTable& table) {
  rope_apply(x, ld, rows, seq, pos_offset, n_heads, table, 1.0f, "rope_forward");
}

void rope_backward(float* dx, int64_t ld, int64_t rows, int64_t seq, int64_t pos_offset, int64_t n_heads,
                   const RopeTable& table) {
  rope_apply(dx, ld, rows, seq, pos_offset, n_heads, table, -1.0f, "rope_backward");
}

}  // namespace tensorpar
