// ColumnParallelLinear at the world's TP degree against the same layer computed serially (TP=1, a
// group of this process alone) in the same test, and the serial layer against finite differences.
#include <gtest/gtest.h>

#include "slices.hpp"
#include "tensorpar/parallel/column_parallel_linear.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::columns;
using testing::local_slice;
using testing::random_vector;

constexpr int64_t kTokens = 5, kIn = 12, kOut = 24;  // 24 splits over 1, 2, 3 and 4 ranks

ColumnParallelOptions options(bool gather_output) {
  ColumnParallelOptions o;
  o.name = "fc";
  o.in_features = kIn;
  o.out_features = kOut;
  o.gather_output = gather_output;
  o.seed = 42;
  o.init_std = 0.5f;
  return o;
}

// A non-zero bias, the same global values at every TP degree.
void set_bias(Parameter& bias) {
  const auto full = random_vector(size_t(kOut), 7);
  const auto mine = local_slice(bias, full);
  std::copy(mine.begin(), mine.end(), bias.value.f32());
}

class ColumnParallelLinearTest : public ::testing::TestWithParam<bool> {};

TEST_P(ColumnParallelLinearTest, MatchesSerialForwardAndBackward) {
  const bool gather = GetParam();
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const int t = world.size(), r = world.rank();
  ColumnParallelLinear serial(self, options(false), kTokens), parallel(world, options(gather), kTokens);
  set_bias(serial.bias);
  set_bias(parallel.bias);
  const int64_t out_pp = kOut / t;
  ASSERT_EQ(parallel.out_features_per_partition(), out_pp);

  // initialisation: the shard is bit-identical to the serial weight's rows
  const auto expected_w = local_slice(parallel.weight, serial.weight.value.span());
  EXPECT_TRUE(all_close(parallel.weight.value.span(), expected_w, 0, 0));
  EXPECT_EQ(parallel.weight.value.f32()[0], serial.weight.value.f32()[r * out_pp * kIn]);

  const auto x = random_vector(size_t(kTokens * kIn), 1);
  const auto dy = random_vector(size_t(kTokens * kOut), 2);  // gradient of the whole output
  std::vector<float> y_serial(size_t(kTokens * kOut)), dx_serial(size_t(kTokens * kIn));
  serial.forward(y_serial.data(), x.data(), kTokens);
  serial.backward(dx_serial.data(), dy.data(), x.data(), kTokens);

  world.reset_stats();
  std::vector<float> y(size_t(kTokens * (gather ? kOut : out_pp))), dx(size_t(kTokens * kIn));
  parallel.forward(y.data(), x.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 0) << "forward of a column-parallel layer needs no all-reduce";
  const auto my_dy = gather ? dy : columns(dy, kTokens, kOut, r * out_pp, out_pp);
  parallel.backward(dx.data(), my_dy.data(), x.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "backward all-reduces dX once";

  if (gather)
    EXPECT_TRUE(all_close(y, y_serial));
  else
    EXPECT_TRUE(all_close(y, columns(y_serial, kTokens, kOut, r * out_pp, out_pp)));
  EXPECT_TRUE(all_close(dx, dx_serial));
  EXPECT_TRUE(all_close(parallel.weight.grad.span(), local_slice(parallel.weight, serial.weight.grad.span())));
  EXPECT_TRUE(all_close(parallel.bias.grad.span(), local_slice(parallel.bias, serial.bias.grad.span())));

  // gradients accumulate over micro-batches
  parallel.backward(dx.data(), my_dy.data(), x.data(), kTokens);
  std::vector<float> twice(serial.weight.grad.span().begin(), serial.weight.grad.span().end());
  for (float& g : twice) g *= 2;
  EXPECT_TRUE(all_close(parallel.weight.grad.span(), local_slice(parallel.weight, twice)));
}

INSTANTIATE_TEST_SUITE_P(GatherOutput, ColumnParallelLinearTest, ::testing::Values(false, true));

TEST(ColumnParallelLinear, SerialGradientsMatchFiniteDifferences) {
  ProcessGroup self = ProcessGroup::self();
  ColumnParallelLinear layer(self, options(false), kTokens);
  set_bias(layer.bias);
  auto x = random_vector(size_t(kTokens * kIn), 3);
  const auto w_loss = random_vector(size_t(kTokens * kOut), 4);  // loss = sum(y * w_loss)
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
  testing::expect_gradient_matches_finite_differences(layer.weight, loss, 11, 2e-3);
  testing::expect_gradient_matches_finite_differences(layer.bias, loss, 5, 2e-3);
}

TEST(ColumnParallelLinear, UnevenSplitThrowsOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() == 1) return;  // every size splits over one rank
  ColumnParallelOptions o = options(false);
  o.out_features = 5 * world.size() + 1;
  try {
    ColumnParallelLinear layer(world, o, kTokens);
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be split evenly"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tensorpar
