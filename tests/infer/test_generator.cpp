// Generation with the KV cache against full recomputation (TransformerLM::last_logits over the whole
// context) at the world's TP degree: the same logits at every step (prefill in chunks, then one
// token at a time) and the same greedy tokens, for GPT-2 and Llama with plain, grouped (kv 2) and
// multi-query (kv 1) attention -- at TP=4 the KV heads are then replicated. The cache holds only
// this rank's KV heads, and every rank draws the same sampled tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../model/random_weights.hpp"
#include "tensorpar/infer/generator.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {


struct Case {
  const char* name;
  ModelFamily family;
  int64_t kv_heads;
};

ModelConfig config_for(const Case& c) {
  ModelConfig m;
  m.family = c.family;
  m.vocab_size = 300;  // padded per rank: the padding must never be gathered
  m.max_seq = 16;
  m.hidden = 32;
  m.layers = 2;
  m.heads = 4;
  m.kv_heads = c.kv_heads;
  m.ffn_hidden = c.family == ModelFamily::Llama ? 48 : 0;
  m.tie_embeddings = c.family == ModelFamily::Gpt2;
  m.rope_theta = 500000.0;
  return m;
}

class GeneratorTest : public ::testing::TestWithParam<Case> {};

TEST_P(GeneratorTest, CachedLogitsAndGreedyTokensEqualFullRecomputation) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = config_for(GetParam());
  constexpr int64_t B = 2, prompt_len = 5, steps = 8;
  // the cached model's buffers hold 3 positions per row: the prompt goes in two chunks (3 + 2)
  TransformerLM cached(world, config, B, 3, 1), full(world, config, B, config.max_seq, 1);
  testing::randomize_weights(cached, 42);
  testing::randomize_weights(full, 42);
  Generator generator(cached, B, prompt_len + steps);
  const int64_t kv_pp = std::max<int64_t>(1, config.kv_heads_or_heads() / world.size());
  EXPECT_EQ(generator.cache().bytes(),
            int64_t(2 * config.layers * B * (prompt_len + steps) * kv_pp * config.head_dim() * sizeof(float)))
      << "the cache holds only this rank's KV heads";

  // rows of the growing contexts (B, prompt_len + step)
  std::vector<std::vector<int32_t>> rows = {{3, 141, 59, 26, 299}, {271, 82, 81, 0, 45}};
  std::vector<int32_t> prompts;
  for (const auto& r : rows) prompts.insert(prompts.end(), r.begin(), r.end());
  const int64_t V = config.vocab_size;
  std::vector<float> got(static_cast<size_t>(B * V)), want(static_cast<size_t>(B * V));
  std::vector<int32_t> next(static_cast<size_t>(B)), context;
  generator.prefill(got.data(), prompts.data(), prompt_len);
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t T = prompt_len + step;
    context.clear();
    for (const auto& r : rows) context.insert(context.end(), r.begin(), r.end());
    full.last_logits(want.data(), context.data(), B, T);
    // The cached and the full model compute each logit by different routes (other GEMM shapes and
    // blockings, attention over the cache), so they may differ by a float error bound of the whole
    // forward: each logit is a dot product of a final hidden state with an embedding row, whose error
    // is relative to sum |h||w|, not to the logit (a logit near zero by cancellation carries the
    // error of its large terms). The row's largest |logit| stands for that magnitude, and the forward
    // accumulates per layer about (hidden + ffn + T) roundings (norm sums, the two GEMMs' dot
    // products, the softmax sum), plus hidden for the head: worst-case linear growth in u = 2^-24.
    const double roundings =
        double(config.layers * (config.hidden + config.ffn_or_default() + T) + config.hidden);
    std::vector<double> tol(got.size());
    for (int64_t b = 0; b < B; ++b) {
      const auto row = std::span(want).subspan(size_t(b * V), size_t(V));
      double scale = 0;
      for (const float v : row) scale = std::max(scale, double(std::fabs(v)));
      std::fill_n(tol.begin() + b * V, V, roundings * testing::kFloatU * scale);
    }
    ASSERT_TRUE(testing::all_within(got, want, tol)) << "step " << step << " (context " << T << ")";
    for (int64_t b = 0; b < B; ++b) {  // greedy, from the full model's logits
      const auto row = std::span(want).subspan(size_t(b * V), size_t(V));
      next[size_t(b)] = int32_t(std::max_element(row.begin(), row.end()) - row.begin());
      rows[size_t(b)].push_back(next[size_t(b)]);
    }
    if (step + 1 < steps) generator.decode(got.data(), next.data());
  }

  // generate() from scratch gives the same greedy tokens
  const GenerationResult r = generator.generate(prompts.data(), prompt_len, steps, SamplingOptions{0.0f, 0, 1.0f, 0});
  ASSERT_EQ(r.new_tokens, steps);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < steps; ++i)
      EXPECT_EQ(r.tokens[size_t(b * steps + i)], rows[size_t(b)][size_t(prompt_len + i)]) << "row " << b << " token " << i;
}

TEST_P(GeneratorTest, SampledTokensAreTheSameOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = config_for(GetParam());
  TransformerLM model(world, config, 1, 4, 3);
  testing::randomize_weights(model, 7);
  Generator generator(model, 1, config.max_seq);
  const std::vector<int32_t> prompt = {10, 20, 30};
  // more tokens than fit: stops when the cache is full (16 - 3 + 1 = 14)
  const GenerationResult r = generator.generate(prompt.data(), 3, 100, SamplingOptions{1.0f, 50, 0.9f, 11});
  ASSERT_EQ(r.new_tokens, 14);
  std::vector<int32_t> all(r.tokens.size() * size_t(world.size()));
  world.all_gather(std::span<int32_t>(all), std::span<const int32_t>(r.tokens));
  for (int rank = 1; rank < world.size(); ++rank)
    EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), all.begin() + rank * int64_t(r.tokens.size())))
        << "rank " << rank << " drew different tokens";
}

INSTANTIATE_TEST_SUITE_P(Models, GeneratorTest,
                         ::testing::Values(Case{"Gpt2", ModelFamily::Gpt2, 0}, Case{"Llama", ModelFamily::Llama, 4},
                                           Case{"LlamaGqa2", ModelFamily::Llama, 2},
                                           Case{"LlamaMqa", ModelFamily::Llama, 1}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(KvCache, RejectsPositionsPastItsEnd) {
  ProcessGroup world = ProcessGroup::world();
  ModelConfig config = config_for({"Gpt2", ModelFamily::Gpt2, 0});
  TransformerLM model(world, config, 1, 4, 3);
  Generator generator(model, 1, 4);
  std::vector<float> logits(size_t(config.vocab_size));
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5};
  EXPECT_THROW(generator.prefill(logits.data(), prompt.data(), 5), ConfigError);
  generator.prefill(logits.data(), prompt.data(), 4);
  EXPECT_THROW(generator.decode(logits.data(), prompt.data()), ShapeError);
  EXPECT_THROW(KvCache(model, 1, config.max_seq + 1), ConfigError);
}

}  // namespace
}  // namespace tensorpar
