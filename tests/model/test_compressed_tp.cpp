// Tensor-parallel training with compressed activation traffic (--tp-comm-dtype bf16 / int8) against
// the same model with f32 traffic, in the same test, on separate TP groups split from the world.
//
// Bound on the loss: each compressed all-reduce perturbs its activation (gradient) by at most a
// relative delta per element (comm tests): bf16 2 x 2^-8 (contribution + reduced shard), int8 about
// 2/127 of the block maximum. A forward pass crosses K = 2L + 1 of them (attention and MLP per block,
// the embedding); to first order the loss moves by at most K * delta * loss per step, and a few SGD
// steps on weights that drift by lr x (gradient error) add no more than that again per step. The test
// allows steps * K * delta * loss. Whatever the dtype, every rank must hold bit-identical replicated
// gradients (the ranks stay in lock-step) and the MLP keeps one all-reduce each way.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/parallel/parallel_mlp.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

constexpr int64_t kB = 2, kT = 6;

void sgd_step(TransformerLM& model, float lr) {
  for (Parameter* p : model.parameters())
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value.f32()[i] -= lr * p->grad.f32()[i];
  model.zero_grad();
}

class CompressedTpTest : public ::testing::TestWithParam<std::tuple<CommDtype, bool>> {};

TEST_P(CompressedTpTest, LossWithinBoundOfF32AndRanksInLockStep) {
  const auto [dtype, sequence_parallel] = GetParam();
  ProcessGroup world = ProcessGroup::world();
  // one group per model: the model sets its group's wire format
  ProcessGroup tp_f32 = world.split(0, world.rank(), "tp"), tp_c = world.split(0, world.rank(), "tp");
  const ModelConfig config = testing::tiny_config(ModelFamily::Gpt2);
  TransformerOptions exact, compressed;
  exact.sequence_parallel = compressed.sequence_parallel = sequence_parallel;
  compressed.tp_comm_dtype = dtype;
  TransformerLM reference(tp_f32, config, kB, kT, 7, exact), model(tp_c, config, kB, kT, 7, compressed);
  const double delta = dtype == CommDtype::BF16 ? 2 * std::ldexp(1.0, -8) : 2.0 / 127;
  const double K = 2 * config.layers + 1;
  const int steps = 4;
  for (int step = 1; step <= steps; ++step) {
    const auto x = testing::random_tokens(uint32_t(10 + step), size_t(kB * kT));
    const auto y = testing::random_tokens(uint32_t(50 + step), size_t(kB * kT));
    const float loss_ref = reference.forward(x.data(), y.data(), kB, kT);
    reference.backward(x.data(), y.data(), kB, kT);
    tp_c.reset_stats();
    const float loss = model.forward(x.data(), y.data(), kB, kT);
    model.backward(x.data(), y.data(), kB, kT);
    const double bound = world.size() == 1 ? 0.0 : step * K * delta * loss_ref;
    EXPECT_LE(std::fabs(double(loss) - loss_ref), bound) << "step " << step << " loss " << loss << " vs " << loss_ref;
    if (world.size() > 1) {
      // only the activation collectives are compressed: the bytes drop by 2 (bf16) or ~3.5 (int8)
      const CommStats& s = tp_c.stats();
      EXPECT_GT(s.count(sequence_parallel ? Collective::ReduceScatter : Collective::AllReduce), 0);
    }
    // replicated parameters (norms, biases of row-parallel layers, wpe) get bit-identical gradients
    for (Parameter* p : model.parameters()) {
      if (!p->replicated()) continue;
      std::vector<float> all(size_t(p->grad.numel() * world.size()));
      world.all_gather(std::span<float>(all), std::span<const float>(p->grad.span()));
      for (int r = 1; r < world.size(); ++r)
        ASSERT_EQ(0, std::memcmp(all.data() + r * p->grad.numel(), all.data(), p->grad.nbytes()))
            << p->name << " differs between rank 0 and rank " << r << " at step " << step;
    }
    sgd_step(reference, 0.1f);
    sgd_step(model, 0.1f);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CompressedTpTest,
                         ::testing::Combine(::testing::Values(CommDtype::BF16, CommDtype::Int8), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(comm_dtype_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "SequenceParallel" : "");
                         });

TEST(CompressedTp, MlpStillOneAllReduceEachWayWithCompressedBytes) {
  ProcessGroup world = ProcessGroup::world();
  const int64_t tokens = 8, hidden = 64;
  MlpOptions o;
  o.fc_name = "mlp.fc";
  o.proj_name = "mlp.proj";
  o.hidden = hidden;
  o.ffn_hidden = 4 * hidden;
  o.seed = 3;
  for (CommDtype dtype : {CommDtype::F32, CommDtype::BF16, CommDtype::Int8}) {
    world.set_comm_dtype(dtype);
    ParallelMLP mlp(world, o, tokens);
    std::vector<float> x(size_t(tokens * hidden), 0.5f), y(x.size()), dy(x.size(), 0.25f), dx(x.size());
    world.reset_stats();
    mlp.forward(y.data(), x.data(), tokens);
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << comm_dtype_name(dtype) << " forward";
    const int64_t forward_bytes = world.stats().bytes[size_t(Collective::AllReduce)];
    world.reset_stats();
    mlp.backward(dx.data(), dy.data(), x.data(), tokens);
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << comm_dtype_name(dtype) << " backward";
    if (world.size() > 1 && tokens * hidden % (32 * world.size()) == 0) {
      // 512 values: f32 2048 bytes, bf16 1024, int8 512 + 16 scales x 4
      const int64_t expected = dtype == CommDtype::F32 ? 2048 : dtype == CommDtype::BF16 ? 1024 : 576;
      EXPECT_EQ(forward_bytes, expected) << comm_dtype_name(dtype);
      EXPECT_EQ(world.stats().bytes[size_t(Collective::AllReduce)], expected) << comm_dtype_name(dtype);
    }
  }
  world.set_comm_dtype(CommDtype::F32);
}

}  // namespace
}  // namespace tensorpar
