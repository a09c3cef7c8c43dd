// The whole model at the world's TP degree against the same model built serially (TP=1) in the
// same test: loss, every gradient, and the initial weights bit for bit. GPT-2 and Llama families.
#include <gtest/gtest.h>

#include <cmath>

#include "../parallel/slices.hpp"
#include "tensorpar/model/transformer.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::local_slice;

constexpr int64_t kBatch = 2, kSeq = 6;

ModelConfig tiny(ModelFamily family) { return testing::tiny_config(family, 2, 12); }  // 12 heads: also 3 ranks

std::vector<int32_t> tokens(uint32_t seed) { return testing::random_tokens(seed, size_t(kBatch * kSeq)); }

// Non-zero biases so their gradients and the bias-once rule are exercised.
void perturb_biases(TransformerLM& m) {
  for (Parameter* p : m.parameters()) {
    if (p->name.find(".bias") == std::string::npos) continue;
    const auto full = testing::random_vector(size_t(shape_numel(p->global_shape)), 77, 0.1f);
    const auto mine = local_slice(*p, full);
    std::copy(mine.begin(), mine.end(), p->value.f32());
  }
}

class TransformerTest : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(TransformerTest, ParallelEqualsSerialLossAndEveryGradient) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const ModelConfig config = tiny(GetParam());
  TransformerLM serial(self, config, kBatch, kSeq, 1234), parallel(world, config, kBatch, kSeq, 1234);
  perturb_biases(serial);
  perturb_biases(parallel);
  const auto x = tokens(1), y = tokens(2);

  const float loss_serial = serial.forward(x.data(), y.data(), kBatch, kSeq);
  serial.backward(x.data(), y.data(), kBatch, kSeq);
  world.reset_stats();
  const float loss = parallel.forward(x.data(), y.data(), kBatch, kSeq);
  const int64_t forward_reduces = world.stats().count(Collective::AllReduce);
  parallel.backward(x.data(), y.data(), kBatch, kSeq);
  const int64_t backward_reduces = world.stats().count(Collective::AllReduce) - forward_reduces;

  EXPECT_NEAR(loss, loss_serial, 1e-5 * std::fabs(loss_serial));
  EXPECT_NEAR(loss_serial, std::log(300.0), 0.5) << "a fresh model predicts about uniformly";
  // per layer: attention + MLP one each; embedding 1; loss 2 (max, [sumexp|target])
  EXPECT_EQ(forward_reduces, 2 * config.layers + 1 + 2);
  // per layer: attention + MLP one each; LM head 1
  EXPECT_EQ(backward_reduces, 2 * config.layers + 1);

  ASSERT_EQ(serial.parameters().size(), parallel.parameters().size());
  for (size_t i = 0; i < serial.parameters().size(); ++i) {
    const Parameter& s = *serial.parameters()[i];
    const Parameter& p = *parallel.parameters()[i];
    ASSERT_EQ(s.name, p.name);
    if (p.global_shape == s.global_shape) {
      EXPECT_TRUE(all_close(p.value.span(), local_slice(p, s.value.span()), 0, 0)) << p.name << " init differs";
      EXPECT_TRUE(all_close(p.grad.span(), local_slice(p, s.grad.span()), 1e-5, 1e-7)) << p.name << " grad";
      continue;
    }
    // vocabulary tables: padded to 128*t rows, so only the real rows correspond; padding stays zero
    const int64_t cols = p.global_shape[1];
    std::vector<float> value, expected_value, grad, expected_grad;
    for (int64_t k = 0; k < p.value.numel(); ++k) {
      const int64_t g = p.global_index(k);
      const bool real = g / cols < config.vocab_size;
      value.push_back(p.value.f32()[k]);
      grad.push_back(p.grad.f32()[k]);
      expected_value.push_back(real ? s.value.f32()[g] : 0.0f);
      expected_grad.push_back(real ? s.grad.f32()[g] : 0.0f);
    }
    EXPECT_TRUE(all_close(value, expected_value, 0, 0)) << p.name << " init differs";
    EXPECT_TRUE(all_close(grad, expected_grad, 1e-5, 1e-7)) << p.name << " grad";
  }
}

TEST_P(TransformerTest, ReplicatedGradientsAreIdenticalOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  TransformerLM model(world, tiny(GetParam()), kBatch, kSeq, 5);
  const auto x = tokens(3), y = tokens(4);
  model.forward(x.data(), y.data(), kBatch, kSeq);
  model.backward(x.data(), y.data(), kBatch, kSeq);
  int replicated = 0;
  for (const Parameter* p : model.parameters()) {
    if (!p->replicated()) continue;
    ++replicated;
    std::vector<float> all(size_t(p->grad.numel() * world.size()));
    world.all_gather(std::span<float>(all), p->grad.span());
    for (int r = 1; r < world.size(); ++r)
      for (int64_t i = 0; i < p->grad.numel(); ++i)
        ASSERT_EQ(all[size_t(r * p->grad.numel() + i)], all[size_t(i)]) << p->name << " rank " << r << " element " << i;
  }
  EXPECT_GT(replicated, 0);
}

TEST_P(TransformerTest, SerialGradientsMatchFiniteDifferences) {
  ProcessGroup self = ProcessGroup::self();
  TransformerLM model(self, tiny(GetParam()), kBatch, kSeq, 99);
  perturb_biases(model);
  const auto x = tokens(5), y = tokens(6);
  model.forward(x.data(), y.data(), kBatch, kSeq);
  model.backward(x.data(), y.data(), kBatch, kSeq);
  for (Parameter* p : model.parameters()) {
    std::vector<float> v(p->value.span().begin(), p->value.span().end());
    // a few elements of every parameter; embedding rows of tokens that occur
    const size_t step = std::max<size_t>(1, v.size() / 3);
    for (size_t i = p->name.find("wte") != std::string::npos || p->name.find("embed") != std::string::npos
                     ? size_t(x[0]) * size_t(p->value.dim(1))
                     : 0;
         i < v.size(); i += step) {
      auto loss = [&] {
        std::copy(v.begin(), v.end(), p->value.f32());
        return double(model.forward(x.data(), y.data(), kBatch, kSeq));
      };
      const double fd = testing::central_difference(v, i, loss, 1e-2);
      EXPECT_NEAR(p->grad.f32()[i], fd, 2e-3 + 2e-2 * std::fabs(fd)) << p->name << "[" << i << "]";
    }
    std::copy(v.begin(), v.end(), p->value.f32());
  }
}

INSTANTIATE_TEST_SUITE_P(Families, TransformerTest, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

TEST(ModelConfig, HeadsNotDivisibleByTpIsAConfigErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  ModelConfig c = tiny(ModelFamily::Gpt2);
  c.heads = 5 * world.size() + 1;
  c.hidden = c.heads * 2;
  if (world.size() == 1) return;  // one rank splits anything
  try {
    TransformerLM m(world, c, 1, 4, 0);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("attention heads cannot be split"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, HiddenNotDivisibleByHeads) {
  ModelConfig c = tiny(ModelFamily::Gpt2);
  c.hidden = 25;
  EXPECT_THROW(c.validate(1), ConfigError);
}

TEST(ModelConfig, HuggingFaceJsonRoundTrips) {
  for (ModelFamily f : {ModelFamily::Gpt2, ModelFamily::Llama}) {
    ModelConfig c = tiny(f);
    c.kv_heads = f == ModelFamily::Llama ? 4 : 0;
    const ModelConfig back = ModelConfig::from_hf_json(c.to_hf_json());
    EXPECT_EQ(back.family, c.family);
    EXPECT_EQ(back.hidden, c.hidden);
    EXPECT_EQ(back.heads, c.heads);
    EXPECT_EQ(back.kv_heads_or_heads(), c.kv_heads_or_heads());
    EXPECT_EQ(back.ffn_or_default(), c.ffn_or_default());
    EXPECT_EQ(back.tie_embeddings, c.tie_embeddings);
  }
  EXPECT_THROW(ModelConfig::from_hf_json({{"model_type", "gpt2"}, {"n_embd", 8}}), ConfigError);
}

}  // namespace
}  // namespace tensorpar
