// Inference-only models (TransformerOptions::inference, and ::weights for quantizing while loading):
// what they allocate, by Tensor::live_bytes() and the model's own accounting against a closed-form
// count of this rank's parameters, and that they compute what the training model computes.
//
// Memory: an inference model holds its f32 weights (or, quantized while loading, only the quantized
// block linears plus the f32 embeddings and norms) and forward activations; no gradient, no gradient
// arena, no backward scratch. Activations are bounded here by a generous per-token count (they are
// small beside the weights at these shapes: B*T = 16 tokens). The training model of the same shape is
// measured the same way, so the test would see gradients if the inference model allocated them.
// Loading quantized: the peak of live Tensor bytes during the load exceeds the end state by at most
// the one f32 row-chunk buffer (never a whole f32 copy of the block linears).
//
// Numerics: the inference model must give the training model's logits and greedy tokens bit for bit
// at the same TP degree (same kernels, same order), and within 1e-5 of the serial (TP=1) training
// model at TP=2/4 (only the all-reduce summation order differs). Quantized while loading must equal
// load-then-quantize exactly (the same integers from the same f32 values).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "random_weights.hpp"
#include "temp_dir.hpp"
#include "tensorpar/infer/generator.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

ModelConfig config_for(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;
  c.max_seq = 16;
  c.hidden = 128;  // 32 attention-output inputs per rank at TP=4: quantizable
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = family == ModelFamily::Llama ? 2 : 0;  // replicated KV heads at TP=4
  c.ffn_hidden = family == ModelFamily::Llama ? 256 : 0;
  c.tie_embeddings = family == ModelFamily::Gpt2;
  return c;
}

// Closed form: bytes of this rank's f32 parameters, split into the block linears (+ untied head),
// which --weights int8/int4 quantizes, and the rest (embeddings, norms, biases).
struct WeightCount {
  int64_t linear_f32 = 0, other_f32 = 0, quantized = 0;
};
WeightCount count_weights(const ModelConfig& c, int t, WeightFormat format) {
  const int64_t C = c.hidden, hd = C / c.heads, kv = c.kv_heads_or_heads(), f = c.ffn_or_default();
  const int64_t V = padded_vocab_size(c.vocab_size, t) / t;
  const bool gpt2 = c.family == ModelFamily::Gpt2;
  const int64_t qkv_rows = (c.heads / t + 2 * std::max<int64_t>(1, kv / t)) * hd;
  const int64_t fc_rows = (gpt2 ? 1 : 2) * f / t;
  // (rows, cols) of each quantizable matrix of one block
  const std::vector<std::pair<int64_t, int64_t>> linears = {{qkv_rows, C}, {C, c.heads * hd / t}, {fc_rows, C}, {C, f / t}};
  WeightCount w;
  auto add_linear = [&](int64_t rows, int64_t cols, int64_t times) {
    w.linear_f32 += times * rows * cols * 4;
    const int64_t q = format == WeightFormat::Int8 ? rows * cols : rows * cols / 2;
    w.quantized += times * (q + rows * (cols / kQuantBlock) * 4);
  };
  for (auto [rows, cols] : linears) add_linear(rows, cols, c.layers);
  if (!c.tie_embeddings) add_linear(V, C, 1);
  int64_t other = V * C + (gpt2 ? c.max_seq * C : 0);  // embedding (+ GPT-2 positions)
  const int64_t norm = gpt2 ? 2 * C : C;              // LayerNorm weight + bias, RMSNorm weight
  other += (2 * c.layers + 1) * norm;
  if (gpt2) other += c.layers * (qkv_rows + C + fc_rows + C);  // biases (qkv, fc sharded; proj replicated)
  w.other_f32 = other * 4;
  return w;
}

// Forward activations of an inference model, generously: per token the residual stream of every
// layer plus a few hidden-sized, QKV-, FFN- and vocab-shard-sized rows; plus each layer's RoPE
// table and 64-byte rounding of up to 64 buffers.
int64_t activation_bound(const ModelConfig& c, int t, int64_t tokens) {
  const int64_t C = c.hidden, f = c.ffn_or_default(), V = padded_vocab_size(c.vocab_size, t) / t;
  const int64_t per_token = (c.layers + 8) * C + 3 * C + 3 * f + V + 16;
  const int64_t rope = c.layers * c.max_seq * C / c.heads * 2;
  return 4 * (tokens * per_token + rope) + 64 * 64;
}

std::vector<float> logits_of(TransformerLM& m, const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  std::vector<float> out(size_t(B * m.config().vocab_size));
  m.last_logits(out.data(), tokens.data(), B, T);
  return out;
}

std::vector<int32_t> greedy(TransformerLM& m, const std::vector<int32_t>& prompt, int64_t B, int64_t T) {
  Generator g(m, B, T + 6);
  return g.generate(prompt.data(), T, 6, {0.0f, 0, 1.0f, 0}).tokens;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return m / scale;
}

class InferenceModel : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(InferenceModel, AllocatesNoGradientsAndComputesWhatTrainingComputes) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  const ModelConfig config = config_for(GetParam());
  constexpr int64_t B = 2, T = 8;
  const int t = world.size();
  const WeightCount count = count_weights(config, t, WeightFormat::Int8);
  const int64_t weights = count.linear_f32 + count.other_f32;

  int64_t live = Tensor::live_bytes();
  TransformerLM trained(world, config, B, T, 3);
  const int64_t train_bytes = Tensor::live_bytes() - live;
  testing::randomize_weights(trained, 11, 0.1f);
  io::save_hf_checkpoint(world, trained, dir.path("m"));

  live = Tensor::live_bytes();
  TransformerLM inference(world, config, B, T, 0, {.inference = true});
  const int64_t inference_bytes = Tensor::live_bytes() - live;
  EXPECT_EQ(inference.gradient_bytes(), 0);
  for (const Parameter* p : inference.parameters()) EXPECT_TRUE(p->grad.empty()) << p->name;
  EXPECT_EQ(inference.weight_bytes(), weights) << "f32 values of this rank's parameters, counted from the config";
  EXPECT_EQ(trained.weight_bytes(), weights);
  EXPECT_GE(trained.gradient_bytes(), weights) << "training keeps a gradient per value";
  EXPECT_GE(train_bytes, 2 * weights) << "the measurement sees gradients where they exist";
  EXPECT_GE(inference_bytes, weights);
  EXPECT_LE(inference_bytes - weights, activation_bound(config, t, B * T))
      << "beyond its weights an inference model holds forward activations only";
  if (world.rank() == 0)
    std::printf("[ info ] TP=%d: weights %lld B; allocated: training %lld B, inference %lld B\n", t,
                (long long)weights, (long long)train_bytes, (long long)inference_bytes);

  io::load_hf_checkpoint(world, inference, dir.path("m"));
  const auto tokens = testing::random_tokens(4, size_t(B * T));
  EXPECT_EQ(logits_of(inference, tokens, B, T), logits_of(trained, tokens, B, T)) << "bit-identical at TP=" << t;
  EXPECT_EQ(greedy(inference, tokens, B, T), greedy(trained, tokens, B, T));
  // against the serial training model: only the all-reduce order differs
  TransformerLM serial(self, config, B, T, 3);
  testing::randomize_weights(serial, 11, 0.1f);
  EXPECT_LE(max_rel_diff(logits_of(inference, tokens, B, T), logits_of(serial, tokens, B, T)), 1e-5);
  EXPECT_EQ(greedy(inference, tokens, B, T), greedy(serial, tokens, B, T)) << "TP=" << t << " vs TP=1";
  EXPECT_THROW(inference.backward(tokens.data(), tokens.data(), B, T), ConfigError);
}

INSTANTIATE_TEST_SUITE_P(Models, InferenceModel, ::testing::Values(ModelFamily::Llama, ModelFamily::Gpt2),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

using QuantCase = std::tuple<ModelFamily, WeightFormat>;
class QuantizedWhileLoading : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizedWhileLoading, HoldsNoF32CopyOfTheLinearsAndEqualsLoadThenQuantize) {
  const auto [family, format] = GetParam();
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  const ModelConfig config = config_for(family);
  constexpr int64_t B = 2, T = 8;
  const int t = world.size();
  const WeightCount count = count_weights(config, t, format);
  {
    TransformerLM trained(world, config, B, T, 3);
    testing::randomize_weights(trained, 12, 0.1f);
    io::save_hf_checkpoint(world, trained, dir.path("m"));
  }
  // reference: f32 inference model, then quantized in place
  TransformerLM reference(world, config, B, T, 0, {.inference = true});
  io::load_hf_checkpoint(world, reference, dir.path("m"));
  reference.quantize_weights(format);

  const int64_t before = Tensor::live_bytes();
  Tensor::reset_peak_bytes();
  TransformerLM model(world, config, B, T, 0, {.inference = true, .weights = format});
  io::load_hf_checkpoint(world, model, dir.path("m"));
  const int64_t after = Tensor::live_bytes() - before, peak = Tensor::peak_bytes() - before;

  EXPECT_EQ(model.weight_format(), format);
  EXPECT_EQ(model.weight_bytes(), count.other_f32 + count.quantized) << "f32 embeddings/norms + quantized linears";
  EXPECT_EQ(reference.weight_bytes(), model.weight_bytes());
  EXPECT_EQ(model.gradient_bytes(), 0);
  EXPECT_LE(after, count.other_f32 + activation_bound(config, t, B * T)) << "no f32 copy of a quantized matrix";
  // the loader's one f32 buffer: a chunk of rows of one matrix (whole matrices at these sizes)
  const int64_t largest = std::max<int64_t>(config.tie_embeddings ? 0 : padded_vocab_size(config.vocab_size, t) / t *
                                                                            config.hidden * 4,
                                            count.linear_f32 / config.layers);
  EXPECT_LE(peak - after, largest + 64) << "loading never held more than one f32 matrix beyond the end state";
  EXPECT_LT(peak, count.linear_f32) << "the f32 linears never existed all at once";
  if (world.rank() == 0)
    std::printf("[ info ] %s TP=%d: f32 linears %lld B; live after loading %lld B (+ %lld B quantized), peak %lld B\n",
                weight_format_name(format), t, (long long)count.linear_f32, (long long)after,
                (long long)count.quantized, (long long)peak);

  const auto tokens = testing::random_tokens(6, size_t(B * T));
  EXPECT_EQ(logits_of(model, tokens, B, T), logits_of(reference, tokens, B, T)) << "the same integers, bit for bit";
  EXPECT_EQ(greedy(model, tokens, B, T), greedy(reference, tokens, B, T));
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedWhileLoading,
                         ::testing::Values(QuantCase{ModelFamily::Llama, WeightFormat::Int8},
                                           QuantCase{ModelFamily::Llama, WeightFormat::Int4},
                                           QuantCase{ModelFamily::Gpt2, WeightFormat::Int4}),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == ModelFamily::Gpt2 ? "Gpt2" : "Llama") +
                                  weight_format_name(std::get<1>(info.param));
                         });

// A shape whose blocks would straddle the row-parallel split is refused at construction, before
// anything is read, on every rank (hidden 48: no multiple of 32).
TEST(QuantizedWhileLoadingShapes, RefusedBeforeLoading) {
  ProcessGroup world = ProcessGroup::world();
  ModelConfig c = config_for(ModelFamily::Llama);
  c.hidden = 48;
  c.kv_heads = 4;
  const TransformerOptions options{.inference = true, .weights = WeightFormat::Int8};
  EXPECT_THROW(TransformerLM(world, c, 1, 4, 0, options), ShapeError);
}

}  // namespace
}  // namespace tensorpar
