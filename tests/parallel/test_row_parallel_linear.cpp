// RowParallelLinear at the world's TP degree against the serial layer in the same test.
#include <gtest/gtest.h>

#include "slices.hpp"
#include "tensorpar/parallel/row_parallel_linear.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::columns;
using testing::local_slice;
using testing::random_vector;

constexpr int64_t kTokens = 6, kIn = 24, kOut = 10;

RowParallelOptions options(bool input_is_parallel) {
  RowParallelOptions o;
  o.name = "proj";
  o.in_features = kIn;
  o.out_features = kOut;
  o.input_is_parallel = input_is_parallel;
  o.seed = 9;
  o.init_std = 0.5f;
  return o;
}

class RowParallelLinearTest : public ::testing::TestWithParam<bool> {};

TEST_P(RowParallelLinearTest, MatchesSerialForwardAndBackward) {
  const bool input_is_parallel = GetParam();
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const int t = world.size(), r = world.rank();
  RowParallelLinear serial(self, options(true), kTokens), parallel(world, options(input_is_parallel), kTokens);
  const auto bias = random_vector(size_t(kOut), 5);
  std::copy(bias.begin(), bias.end(), serial.bias.value.f32());
  std::copy(bias.begin(), bias.end(), parallel.bias.value.f32());
  const int64_t in_pp = kIn / t;
  EXPECT_TRUE(all_close(parallel.weight.value.span(), local_slice(parallel.weight, serial.weight.value.span()), 0, 0));

  const auto x = random_vector(size_t(kTokens * kIn), 1);
  const auto dy = random_vector(size_t(kTokens * kOut), 2);
  std::vector<float> y_serial(size_t(kTokens * kOut)), dx_serial(size_t(kTokens * kIn));
  serial.forward(y_serial.data(), x.data(), kTokens);
  serial.backward(dx_serial.data(), dy.data(), x.data(), kTokens);

  world.reset_stats();
  const auto x_in = input_is_parallel ? columns(x, kTokens, kIn, r * in_pp, in_pp) : x;
  std::vector<float> y(size_t(kTokens * kOut)), dx(x_in.size());
  parallel.forward(y.data(), x_in.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "forward all-reduces the partial sums once";
  parallel.backward(dx.data(), dy.data(), x_in.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "backward needs no all-reduce";

  EXPECT_TRUE(all_close(y, y_serial));  // bias added once, not t times
  EXPECT_TRUE(all_close(dx, input_is_parallel ? columns(dx_serial, kTokens, kIn, r * in_pp, in_pp) : dx_serial));
  EXPECT_TRUE(all_close(parallel.weight.grad.span(), local_slice(parallel.weight, serial.weight.grad.span())));
  EXPECT_TRUE(all_close(parallel.bias.grad.span(), serial.bias.grad.span()));
}

INSTANTIATE_TEST_SUITE_P(InputIsParallel, RowParallelLinearTest, ::testing::Values(true, false));

TEST(RowParallelLinear, SerialGradientsMatchFiniteDifferences) {
  ProcessGroup self = ProcessGroup::self();
  RowParallelLinear layer(self, options(true), kTokens);
  auto x = random_vector(size_t(kTokens * kIn), 3);
  const auto w_loss = random_vector(size_t(kTokens * kOut), 4);
  std::vector<float> y(size_t(kTokens * kOut)), dx(size_t(kTokens * kIn));
  auto loss = [&] {
    layer.forward(y.data(), x.data(), kTokens);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * w_loss[i];
    return s;
  };
  layer.backward(dx.data(), w_loss.data(), x.data(), kTokens);
  for (size_t i = 0; i < x.size(); i += 7)
    EXPECT_NEAR(dx[i], testing::central_difference(x, i, loss), 2e-3) << "dx[" << i << "]";
  testing::expect_gradient_matches_finite_differences(layer.weight, loss, 13, 2e-3);
  for (int64_t j = 0; j < kOut; ++j) {
    double expected = 0;
    for (int64_t n = 0; n < kTokens; ++n) expected += w_loss[size_t(n * kOut + j)];
    EXPECT_NEAR(layer.bias.grad.f32()[j], expected, 1e-5);
  }
}

}  // namespace
}  // namespace tensorpar
