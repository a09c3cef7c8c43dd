// Activation recomputation computes exactly what keeping the activations computes: selective
// (attention output) and full (block forward rerun before its backward) give the same loss and every
// gradient as no recomputation, GPT-2 and Llama, with and without sequence parallelism, f32 and
// bf16 (whose bf16 input copies are shared between layers too), at the world's TP degree. Full
// recomputation costs one extra attention collective per block but the last; memory drops.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "tensorpar/model/transformer.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

using testing::all_close;

constexpr int64_t kBatch = 2, kSeq = 6;

// 3 layers: the first block owns the shared buffers, a middle one, and the last (not recomputed)
ModelConfig tiny(ModelFamily family) { return testing::tiny_config(family, 3); }

std::vector<int32_t> tokens(uint32_t seed) { return testing::random_tokens(seed, size_t(kBatch * kSeq)); }

struct StepResult {
  float loss = 0;
  CommStats forward, backward;
};

StepResult train_step(ProcessGroup& world, TransformerLM& m, const std::vector<int32_t>& x, const std::vector<int32_t>& y) {
  StepResult r;
  world.reset_stats();
  r.loss = m.forward(x.data(), y.data(), kBatch, kSeq);
  r.forward = world.stats();
  world.reset_stats();
  m.backward(x.data(), y.data(), kBatch, kSeq);
  r.backward = world.stats();
  return r;
}

// family, sequence parallel, precision
class RecomputeTest : public ::testing::TestWithParam<std::tuple<ModelFamily, bool, Precision>> {};

TEST_P(RecomputeTest, SameLossAndEveryGradientAsKeepingTheActivations) {
  ProcessGroup world = ProcessGroup::world();
  const auto [family, sp, precision] = GetParam();
  const ModelConfig config = tiny(family);
  TransformerOptions keep{precision, sp, Recompute::None}, selective{precision, sp, Recompute::Attention},
      full{precision, sp, Recompute::Full};
  TransformerLM a(world, config, kBatch, kSeq, 7, keep), b(world, config, kBatch, kSeq, 7, selective),
      c(world, config, kBatch, kSeq, 7, full);
  const auto x = tokens(1), y = tokens(2);
  // two steps, so a second forward over buffers already used by every layer is covered too
  for (int step = 0; step < 2; ++step) {
    for (TransformerLM* m : {&a, &b, &c}) m->zero_grad();
    const StepResult none = train_step(world, a, x, y), attention = train_step(world, b, x, y),
              recompute = train_step(world, c, x, y);
    EXPECT_NEAR(attention.loss, none.loss, 1e-5 * none.loss);
    EXPECT_NEAR(recompute.loss, none.loss, 1e-5 * none.loss);
    for (size_t i = 0; i < a.parameters().size(); ++i) {
      const Parameter& p = *a.parameters()[i];
      EXPECT_TRUE(all_close(b.parameters()[i]->grad.span(), p.grad.span(), 1e-5, 1e-7))
          << p.name << " (selective), step " << step;
      EXPECT_TRUE(all_close(c.parameters()[i]->grad.span(), p.grad.span(), 1e-5, 1e-7))
          << p.name << " (full), step " << step;
    }
    // selective recomputation needs no communication; full reruns the attention's collectives of
    // every block but the last (whose activations are still in the shared buffers) and, sequence
    // parallel, the all-gather entering the MLP; never the MLP's output projection
    // (a group of one still counts its all-reduces; it is never sequence parallel)
    const int64_t rerun = config.layers - 1;
    const bool seq = sp && world.size() > 1;
    for (Collective k : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter}) {
      EXPECT_EQ(attention.backward.count(k), none.backward.count(k)) << collective_name(k);
      EXPECT_EQ(recompute.forward.count(k), none.forward.count(k)) << collective_name(k);
    }
    EXPECT_EQ(recompute.backward.count(Collective::AllReduce),
              none.backward.count(Collective::AllReduce) + (seq ? 0 : rerun));
    EXPECT_EQ(recompute.backward.count(Collective::ReduceScatter),
              none.backward.count(Collective::ReduceScatter) + (seq ? rerun : 0));
    EXPECT_EQ(recompute.backward.count(Collective::AllGather),
              none.backward.count(Collective::AllGather) + (seq ? 2 * rerun : 0));
  }
  EXPECT_LT(b.activation_bytes_per_layer(), a.activation_bytes_per_layer());
  EXPECT_LT(c.activation_bytes_per_layer(), b.activation_bytes_per_layer());
}

INSTANTIATE_TEST_SUITE_P(
    Modes, RecomputeTest,
    ::testing::Combine(::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama), ::testing::Bool(),
                       ::testing::Values(Precision::F32, Precision::BF16)),
    [](const auto& info) { return testing::mode_name(info); });

TEST(Recompute, ParsesItsNames) {
  for (Recompute r : {Recompute::None, Recompute::Attention, Recompute::Full})
    EXPECT_EQ(parse_recompute(recompute_name(r)), r);
  EXPECT_THROW(parse_recompute("selective"), ConfigError);
}

}  // namespace
}  // namespace tensorpar
