#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/rope.hpp"

namespace tensorpar {
using testing::all_close;
using testing::random_vector;

TEST(Rope, HandComputedTinyCase) {
  // hd = 4, theta = 10000: inv_freq = {10000^0, 10000^(-2/4)} = {1, 0.01}. At pos 1 the angles are 1 and 0.01.
  RopeTable table(4, 2, 10000.0);
  const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.01), s1 = std::sin(0.01);
  EXPECT_FLOAT_EQ(table.cos(1)[0], float(c0));
  EXPECT_FLOAT_EQ(table.sin(1)[1], float(s1));
  EXPECT_EQ(table.cos(0)[1], 1.0f);
  EXPECT_EQ(table.sin(0)[0], 0.0f);
  // Rows of stride 5 (one padding column); row 0 is at position 0 (unchanged), row 1 at position 1.
  std::vector<float> x = {1, 2, 3, 4, 99, 1, 2, 3, 4, 99};
  rope_forward(x.data(), 5, 2, 2, 0, 1, table);
  // x'[i] = x[i] cos_i - x[i+2] sin_i;  x'[i+2] = x[i+2] cos_i + x[i] sin_i
  const std::vector<float> expected = {1, 2, 3, 4, 99,
                                       float(1 * c0 - 3 * s0), float(2 * c1 - 4 * s1),
                                       float(3 * c0 + 1 * s0), float(4 * c1 + 2 * s1), 99};
  EXPECT_TRUE(all_close(x, expected, 1e-6, 1e-7));
  // The same numbers written out: cos 1 = 0.5403023, sin 1 = 0.8414710, cos .01 = 0.99995, sin .01 = 0.0099998.
  EXPECT_NEAR(x[5], 1 * 0.5403023 - 3 * 0.8414710, 1e-6);
  EXPECT_NEAR(x[8], 4 * 0.99995 + 2 * 0.0099998333, 1e-6);
}

TEST(Rope, PositionsFollowRowModSeqAndOffset) {
  // 2 batch elements x 3 positions, 3 heads of 8, row stride 30, offset 5: row r is at 5 + r % 3.
  const int64_t hd = 8, H = 3, ld = 30, seq = 3, rows = 6, off = 5;
  RopeTable table(hd, 16, 500000.0);
  auto x = random_vector(rows * ld, 1);
  auto y = x;
  rope_forward(y.data(), ld, rows, seq, off, H, table);
  std::vector<float> expected(x);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double inv_freq = float(1.0 / std::pow(500000.0, 2.0 * i / hd));
        const double a = double(off + r % seq) * inv_freq;
        const double x1 = x[r * ld + h * hd + i], x2 = x[r * ld + h * hd + i + hd / 2];
        expected[r * ld + h * hd + i] = float(x1 * std::cos(a) - x2 * std::sin(a));
        expected[r * ld + h * hd + i + hd / 2] = float(x2 * std::cos(a) + x1 * std::sin(a));
      }
  EXPECT_TRUE(all_close(y, expected, 1e-5, 1e-6));
}

TEST(Rope, BackwardIsTheInverseAndTheTranspose) {
  const int64_t hd = 16, H = 2, ld = 40, seq = 7, rows = 14;
  RopeTable table(hd, 64, 10000.0);
  auto x = random_vector(rows * ld, 2), g = random_vector(rows * ld, 3);
  auto y = x;
  rope_forward(y.data(), ld, rows, seq, 3, H, table);
  rope_backward(y.data(), ld, rows, seq, 3, H, table);
  EXPECT_TRUE(all_close(y, x, 1e-5, 1e-6));
  // <R x, g> == <x, R^T g>: the backward is the adjoint (what the chain rule needs).
  auto rx = x, rtg = g;
  rope_forward(rx.data(), ld, rows, seq, 3, H, table);
  rope_backward(rtg.data(), ld, rows, seq, 3, H, table);
  EXPECT_NEAR(testing::dot(rx, g), testing::dot(x, rtg), 1e-4);
}

TEST(Rope, RejectsBadShapes) {
  RopeTable table(8, 4, 10000.0);
  std::vector<float> x(64);
  EXPECT_THROW(rope_forward(x.data(), 8, 2, 2, 3, 1, table), ShapeError);  // positions 3..4 >= 4
  EXPECT_THROW(rope_forward(x.data(), 7, 2, 2, 0, 1, table), ShapeError);  // ld < head_dim
  EXPECT_THROW(RopeTable(7, 4, 10000.0), ShapeError);
}

}  // namespace tensorpar
