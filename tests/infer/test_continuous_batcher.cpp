// Continuous batching against generating each prompt alone: requests with prompts of different
// lengths join a running batch of 3 slots at different steps, finish at different times and hand
// their slots to waiting ones; every request must get the logits (to 1e-5) and greedy tokens that
// Generator gives for its prompt as a batch of one -- positions, RoPE / learned positions, and the
// causal range are per row. GPT-2 and Llama (grouped KV heads) at the world's TP degree, and a
// cancelled request's slot is reused.
#include <gtest/gtest.h>

#include <map>

#include "../model/random_weights.hpp"
#include "../model/tiny_model.hpp"
#include "tensorpar/infer/continuous_batcher.hpp"
#include "tensorpar/infer/generator.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

ModelConfig config_for(ModelFamily family) {
  ModelConfig m;
  m.family = family;
  m.vocab_size = 300;
  m.max_seq = 24;
  m.hidden = 32;
  m.layers = 2;
  m.heads = 4;
  m.kv_heads = family == ModelFamily::Llama ? 2 : 0;
  m.ffn_hidden = family == ModelFamily::Llama ? 48 : 0;
  m.tie_embeddings = family == ModelFamily::Gpt2;
  m.rope_theta = 10000.0;
  return m;
}

struct Alone {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // per token
};

// The prompt generated alone, as tensorpar generate does: a model built for one row, here with
// buffers for 4 positions, so its prefill goes in the same chunks of 4 as the batcher's.
Alone generate_alone(ProcessGroup& world, const ModelConfig& config, const std::vector<int32_t>& prompt, int64_t n) {
  const int64_t len = int64_t(prompt.size());
  TransformerLM model(world, config, 1, std::min<int64_t>(len, 4), 1);
  testing::randomize_weights(model, 7);
  Generator g(model, 1, std::min(config.max_seq, len + n - 1));
  std::vector<float> logits(size_t(config.vocab_size));
  Alone a;
  g.prefill(logits.data(), prompt.data(), len);
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) g.decode(logits.data(), &a.tokens.back());
    a.logits.push_back(logits);
    a.tokens.push_back(int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  return a;
}

class ContinuousBatcherTest : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(ContinuousBatcherTest, EveryRequestGetsWhatItGetsAlone) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = config_for(GetParam());
  // id -> (prompt, max new tokens); lengths 1..9, some finish early, 6 requests over 3 slots
  std::map<int64_t, std::pair<std::vector<int32_t>, int64_t>> requests = {
      {10, {testing::random_tokens(1, 5), 6}}, {11, {testing::random_tokens(2, 9), 3}},
      {12, {testing::random_tokens(3, 1), 8}}, {13, {testing::random_tokens(4, 7), 5}},
      {14, {testing::random_tokens(5, 3), 9}}, {15, {testing::random_tokens(6, 16), 9}}};
  TransformerLM model(world, config, 3, 8, 1);
  testing::randomize_weights(model, 7);
  // prefill chunks of 4: prompts of 5..16 tokens go in several passes, as in a short-buffered generate
  ContinuousBatcher batcher(model, 3, config.max_seq, 4);
  std::map<int64_t, Alone> got;
  auto add = [&](int64_t id) {
    batcher.add({id, requests[id].first, requests[id].second, SamplingOptions{0.0f, 0, 1.0f, 0}});
  };
  add(10);
  add(11);
  int64_t steps = 0, finished = 0;
  while (finished < int64_t(requests.size())) {
    ASSERT_LT(steps, 100) << "requests never finish";
    if (steps == 1) add(12);  // joins a running batch
    if (steps == 2) {         // more requests than free slots: they wait
      add(13);
      add(14);
      add(15);
    }
    for (const StepToken& t : batcher.step()) {
      got[t.id].tokens.push_back(t.token);
      got[t.id].logits.emplace_back(t.logits, t.logits + config.vocab_size);
      finished += t.last;
    }
    EXPECT_LE(batcher.active(), 3);
    ++steps;
  }
  EXPECT_EQ(batcher.active(), 0);
  EXPECT_EQ(batcher.waiting(), 0);
  for (auto& [id, r] : requests) {
    SCOPED_TRACE(fmt::format("request {} (prompt of {})", id, r.first.size()));
    // decode rows differ from a batch of one only in the GEMMs' row count (rounding, in the tolerance)
    const Alone want = generate_alone(world, config, r.first, r.second);
    ASSERT_EQ(got[id].tokens, want.tokens);
    for (size_t i = 0; i < want.logits.size(); ++i)
      EXPECT_TRUE(testing::all_close(got[id].logits[i], want.logits[i], 1e-5f, 1e-5f)) << "token " << i;
  }
}

TEST_P(ContinuousBatcherTest, CancelledRequestFreesItsSlot) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = config_for(GetParam());
  TransformerLM model(world, config, 2, 8, 1);
  testing::randomize_weights(model, 7);
  ContinuousBatcher batcher(model, 2, config.max_seq);
  const SamplingOptions greedy{0.0f, 0, 1.0f, 0};
  batcher.add({1, testing::random_tokens(1, 4), 20, greedy});
  batcher.add({2, testing::random_tokens(2, 4), 20, greedy});
  batcher.add({3, testing::random_tokens(3, 6), 4, greedy});
  batcher.step();
  EXPECT_EQ(batcher.active(), 2);
  EXPECT_EQ(batcher.waiting(), 1);
  batcher.cancel(1);
  std::vector<int32_t> tokens3;
  for (int i = 0; i < 10; ++i)
    for (const StepToken& t : batcher.step()) {
      EXPECT_NE(t.id, 1) << "a cancelled request produced a token";
      if (t.id == 3) tokens3.push_back(t.token);
    }
  EXPECT_EQ(tokens3, generate_alone(world, config, testing::random_tokens(3, 6), 4).tokens)
      << "request 3 took the cancelled request's slot, whose stale cache must not leak into it";
  EXPECT_THROW(batcher.add({4, {}, 3, greedy}), ConfigError);
  EXPECT_THROW(batcher.add({4, testing::random_tokens(4, 25), 3, greedy}), ConfigError);
  EXPECT_THROW(batcher.add({4, {300}, 3, greedy}), ConfigError);
}

INSTANTIATE_TEST_SUITE_P(Families, ContinuousBatcherTest, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

}  // namespace
}  // namespace tensorpar
