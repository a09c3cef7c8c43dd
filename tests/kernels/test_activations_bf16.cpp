// The fused bf16 activations (kernels/activations_bf16.hpp) against the unfused kernels they replace
// in bf16 training: f32 activation, then convert_f32_to_bf16 (and bias_backward). They must agree bit
// for bit, at one and at two threads, on shapes with ragged tiles and column blocks, so that bf16
// training gives exactly the results it gave before the fusion.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <vector>

#include "kernel_check.hpp"
#include "tensorpar/kernels/activations.hpp"
#include "tensorpar/kernels/activations_bf16.hpp"
#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"

namespace tensorpar {
namespace {
using testing::random_vector;

class Threads {
 public:
  explicit Threads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~Threads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

// First index where two bf16 arrays differ in their bits, or -1.
int64_t first_difference(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].bits != b[i].bits) return int64_t(i);
  return -1;
}

struct Shape {
  int64_t N, C;
};
// (7, 300): column blocks of 256 and 44, below the threading threshold; (61, 1536): gpt-bench's
// ffn per rank, threaded, 22 whole forward tiles + a ragged one; (5, 5000): rows longer than a tile
const Shape kShapes[] = {{7, 300}, {61, 1536}, {5, 5000}};

TEST(ActivationsBf16, GeluForwardEqualsGeluThenConvert) {
  for (int threads : {1, 2})
    for (const Shape& s : kShapes) {
      Threads guard(threads);
      const int64_t n = s.N * s.C;
      const auto x = random_vector(size_t(n), 11, 5.0f);
      std::vector<float> y(static_cast<size_t>(n));
      std::vector<bf16> expected(static_cast<size_t>(n)), fused(static_cast<size_t>(n));
      gelu_forward(y.data(), x.data(), n);
      convert_f32_to_bf16(expected.data(), y.data(), n);
      gelu_forward_bf16(fused.data(), x.data(), n);
      EXPECT_EQ(first_difference(fused, expected), -1) << s.N << " x " << s.C << ", " << threads << " thread(s)";
    }
}

TEST(ActivationsBf16, SwigluForwardEqualsSwigluThenConvert) {
  for (int threads : {1, 2})
    for (const Shape& s : kShapes) {
      Threads guard(threads);
      const int64_t ld = 2 * s.C;  // [gate | up] halves of one fused projection, as the MLP holds them
      const auto gu = random_vector(size_t(s.N * ld), 12, 4.0f);
      std::vector<float> y(size_t(s.N * s.C));
      std::vector<bf16> expected(y.size()), fused(y.size());
      swiglu_forward(y.data(), gu.data(), gu.data() + s.C, s.N, s.C, ld);
      convert_f32_to_bf16(expected.data(), y.data(), int64_t(y.size()));
      swiglu_forward_bf16(fused.data(), gu.data(), gu.data() + s.C, s.N, s.C, ld);
      EXPECT_EQ(first_difference(fused, expected), -1) << s.N << " x " << s.C << ", " << threads << " thread(s)";
    }
}

TEST(ActivationsBf16, GeluBackwardEqualsGeluBackwardConvertAndBiasBackward) {
  for (int threads : {1, 2})
    for (const Shape& s : kShapes) {
      Threads guard(threads);
      const int64_t n = s.N * s.C;
      const auto x = random_vector(size_t(n), 13, 5.0f), dy = random_vector(size_t(n), 14, 1.0f);
      const auto bias0 = random_vector(size_t(s.C), 15, 1.0f);  // backward accumulates into it
      std::vector<float> dx(static_cast<size_t>(n)), db_expected = bias0, db_fused = bias0;
      std::vector<bf16> expected(static_cast<size_t>(n)), fused(static_cast<size_t>(n));
      gelu_backward(dx.data(), dy.data(), x.data(), n);
      convert_f32_to_bf16(expected.data(), dx.data(), n);
      bias_backward(db_expected.data(), dx.data(), s.N, s.C);
      gelu_backward_bf16(fused.data(), db_fused.data(), dy.data(), x.data(), s.N, s.C);
      const std::string where = std::to_string(s.N) + " x " + std::to_string(s.C) + ", " + std::to_string(threads) +
                                " thread(s)";
      EXPECT_EQ(first_difference(fused, expected), -1) << where;
      EXPECT_EQ(std::memcmp(db_fused.data(), db_expected.data(), db_fused.size() * sizeof(float)), 0)
          << "bias gradient, " << where;
      // without a bias: the same gradient, nothing else touched
      std::vector<bf16> no_bias(static_cast<size_t>(n));
      gelu_backward_bf16(no_bias.data(), nullptr, dy.data(), x.data(), s.N, s.C);
      EXPECT_EQ(first_difference(no_bias, expected), -1) << "no bias, " << where;
    }
}

}  // namespace
}  // namespace tensorpar
