// Sequence parallelism computes exactly what plain tensor parallelism computes: the same loss and
// every gradient (1e-5), at every TP degree, with reduce-scatter/all-gather pairs in place of the
// block all-reduces; last_logits agree too.
#include <gtest/gtest.h>

#include <cmath>

#include "tensorpar/model/transformer.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

using testing::all_close;

ModelConfig tiny(ModelFamily family) { return testing::tiny_config(family); }

std::vector<int32_t> tokens(uint32_t seed) { return testing::random_tokens(seed, 12); }

class SequenceParallelTest : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(SequenceParallelTest, EqualsPlainTensorParallel) {
  ProcessGroup world = ProcessGroup::world();
  TransformerOptions sp;
  sp.sequence_parallel = true;
  TransformerLM plain(world, tiny(GetParam()), 2, 6, 11), seq(world, tiny(GetParam()), 2, 6, 11, sp);
  const auto x = tokens(1), y = tokens(2);
  const float loss_plain = plain.forward(x.data(), y.data(), 2, 6);
  plain.backward(x.data(), y.data(), 2, 6);
  world.reset_stats();
  const float loss = seq.forward(x.data(), y.data(), 2, 6);
  const CommStats forward = world.stats();
  seq.backward(x.data(), y.data(), 2, 6);

  EXPECT_NEAR(loss, loss_plain, 1e-5 * loss_plain);
  const int64_t L = tiny(GetParam()).layers;
  if (world.size() > 1) {
    // per block: attention and MLP each gather their input and reduce-scatter their output
    EXPECT_EQ(forward.count(Collective::ReduceScatter), 2 * L + 1) << "blocks + embedding";
    EXPECT_EQ(forward.count(Collective::AllGather), 2 * L + 1) << "blocks + LM head input";
    EXPECT_EQ(forward.count(Collective::AllReduce), 2) << "only the loss's max and sums remain all-reduces";
  }
  for (size_t i = 0; i < plain.parameters().size(); ++i) {
    const Parameter& p = *plain.parameters()[i];
    const Parameter& q = *seq.parameters()[i];
    EXPECT_TRUE(all_close(q.grad.span(), p.grad.span(), 1e-5, 1e-7)) << q.name;
  }
  std::vector<float> logits_plain(2 * 300), logits_seq(2 * 300);
  plain.last_logits(logits_plain.data(), x.data(), 2, 6);
  seq.last_logits(logits_seq.data(), x.data(), 2, 6);
  EXPECT_TRUE(all_close(logits_seq, logits_plain, 1e-5, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Families, SequenceParallelTest, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

TEST(SequenceParallel, TokensNotDivisibleByTheGroupIsAConfigError) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() == 1) return;  // one rank holds every token
  TransformerOptions sp;
  sp.sequence_parallel = true;
  try {
    TransformerLM model(world, tiny(ModelFamily::Gpt2), 1, 5, 0, sp);  // 5 tokens over 2 or 4 ranks
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("sequence parallelism splits the 5 tokens"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tensorpar
