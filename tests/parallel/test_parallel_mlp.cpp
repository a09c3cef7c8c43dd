// ParallelMLP (GELU and SwiGLU) against the serial MLP in the same test, exactly one all-reduce
// forward and one backward, and finite differences on the serial MLP.
#include <gtest/gtest.h>

#include "slices.hpp"
#include "tensorpar/parallel/parallel_mlp.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::local_slice;
using testing::random_vector;

constexpr int64_t kTokens = 7, kHidden = 8, kFfn = 24;

MlpOptions options(MlpActivation act) {
  MlpOptions o;
  o.fc_name = "mlp.fc";
  o.proj_name = "mlp.proj";
  o.hidden = kHidden;
  o.ffn_hidden = kFfn;
  o.activation = act;
  o.bias = act == MlpActivation::Gelu;
  o.seed = 3;
  o.init_std = 0.4f;
  o.proj_init_std = 0.3f;
  return o;
}

class ParallelMlpTest : public ::testing::TestWithParam<MlpActivation> {};

TEST_P(ParallelMlpTest, MatchesSerialWithOneAllReduceEachWay) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  ParallelMLP serial(self, options(GetParam()), kTokens), parallel(world, options(GetParam()), kTokens);
  const auto x = random_vector(size_t(kTokens * kHidden), 11);
  const auto dy = random_vector(size_t(kTokens * kHidden), 12);
  std::vector<float> y_serial(x.size()), dx_serial(x.size()), y(x.size()), dx(x.size());
  serial.forward(y_serial.data(), x.data(), kTokens);
  serial.backward(dx_serial.data(), dy.data(), x.data(), kTokens);

  world.reset_stats();
  parallel.forward(y.data(), x.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "MLP forward: exactly one all-reduce";
  world.reset_stats();
  parallel.backward(dx.data(), dy.data(), x.data(), kTokens);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "MLP backward: exactly one all-reduce";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0);

  EXPECT_TRUE(all_close(y, y_serial));
  EXPECT_TRUE(all_close(dx, dx_serial));
  std::vector<Parameter*> ps, pp;
  serial.collect_parameters(ps);
  parallel.collect_parameters(pp);
  ASSERT_EQ(ps.size(), pp.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(all_close(pp[i]->value.span(), local_slice(*pp[i], ps[i]->value.span()), 0, 0)) << pp[i]->name;
    EXPECT_TRUE(all_close(pp[i]->grad.span(), local_slice(*pp[i], ps[i]->grad.span()))) << pp[i]->name;
  }
}

TEST_P(ParallelMlpTest, SerialGradientsMatchFiniteDifferences) {
  ProcessGroup self = ProcessGroup::self();
  ParallelMLP mlp(self, options(GetParam()), kTokens);
  auto x = random_vector(size_t(kTokens * kHidden), 13);
  const auto w_loss = random_vector(x.size(), 14);
  std::vector<float> y(x.size()), dx(x.size());
  auto loss = [&] {
    mlp.forward(y.data(), x.data(), kTokens);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * w_loss[i];
    return s;
  };
  loss();  // forward first: backward reads the activations it saved
  mlp.backward(dx.data(), w_loss.data(), x.data(), kTokens);
  for (size_t i = 0; i < x.size(); i += 5)
    EXPECT_NEAR(dx[i], testing::central_difference(x, i, loss), 5e-3) << "dx[" << i << "]";
  std::vector<Parameter*> params;
  mlp.collect_parameters(params);
  for (Parameter* p : params) testing::expect_gradient_matches_finite_differences(*p, loss, 17, 5e-3);
}

INSTANTIATE_TEST_SUITE_P(Activations, ParallelMlpTest,
                         ::testing::Values(MlpActivation::Gelu, MlpActivation::SwiGLU));

TEST(ParallelInit, WeightsAreBitIdenticalSlicesAtEveryDegree) {
  // The world's shard against a serial layer built from the same seed: every element equal bit for bit.
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  MlpOptions o = options(MlpActivation::SwiGLU);
  ParallelMLP serial(self, o, 1), parallel(world, o, 1);
  std::vector<Parameter*> ps, pp;
  serial.collect_parameters(ps);
  parallel.collect_parameters(pp);
  for (size_t i = 0; i < ps.size(); ++i) {
    const auto expected = local_slice(*pp[i], ps[i]->value.span());
    for (size_t k = 0; k < expected.size(); ++k)
      ASSERT_EQ(pp[i]->value.f32()[k], expected[k]) << pp[i]->name << " element " << k;
  }
}

}  // namespace
}  // namespace tensorpar
