// Memory accounting: the activation bytes a model holds per layer per rank (measured from the
// buffers it keeps) match the formula documented in docs/memory.md, written out here again from the
// document, for plain TP and TP+SP, recomputation none/attention/full, f32 and bf16, GPT-2 and Llama,
// at the world's TP degree; and parameter memory is 16 bytes per element held, 1/t of the sharded part.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "tensorpar/model/memory.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

ModelConfig small(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;
  c.max_seq = 16;
  c.hidden = 64;
  c.heads = 8;
  c.layers = 3;
  c.kv_heads = family == ModelFamily::Llama ? 4 : 0;  // grouped-query attention
  c.ffn_hidden = family == ModelFamily::Llama ? 96 : 0;
  c.tie_embeddings = family == ModelFamily::Gpt2;
  return c;
}

// docs/memory.md, "Our formula", in bytes per layer per rank:
//   M_none = (N/r)(16h + 8n) + (4N/t)(2h + 2kh/a + a + (g+1)f) + [bf16] (4Nh [not SP] + 2N(h+f)/t)
//   M_attention = M_none - (1 - 1/L) N h (4 + 2[bf16]) / t
//   M_full = 4Nh/r + (M_none - 4Nh/r) / L
// N = sb tokens, r = t with SP else 1, n = 2 (LayerNorm) or 1 (RMSNorm), g = 1 (GELU) or 2 (SwiGLU).
double documented(const ModelConfig& c, int64_t b, int64_t s, int t, const TransformerOptions& o) {
  const double N = double(s * b), h = double(c.hidden), a = double(c.heads), L = double(c.layers);
  const double k = double(c.kv_heads > 0 ? c.kv_heads : c.heads);
  const double f = double(c.ffn_hidden > 0 ? c.ffn_hidden : 4 * c.hidden);
  const bool sp = o.sequence_parallel && t > 1;
  const double bf16 = o.precision == Precision::BF16 ? 1 : 0;
  const double r = sp ? t : 1, n = c.family == ModelFamily::Gpt2 ? 2 : 1, g = c.family == ModelFamily::Gpt2 ? 1 : 2;
  const double none = N / r * (16 * h + 8 * n) + 4 * N / t * (2 * h + 2 * k * h / a + a + (g + 1) * f) +
                      bf16 * ((sp ? 0 : 4 * N * h) + 2 * N * (h + f) / t);
  if (o.recompute == Recompute::Attention) return none - (1 - 1 / L) * N * h * (4 + 2 * bf16) / t;
  if (o.recompute == Recompute::Full) return 4 * N * h / r + (none - 4 * N * h / r) / L;
  return none;
}

class MemoryTest : public ::testing::TestWithParam<std::tuple<ModelFamily, bool, Precision>> {};

TEST_P(MemoryTest, MeasuredActivationBytesPerLayerMatchTheDocumentedFormula) {
  ProcessGroup world = ProcessGroup::world();
  const auto [family, sp, precision] = GetParam();
  const ModelConfig config = small(family);
  const int64_t B = 2, T = 16;
  for (Recompute recompute : {Recompute::None, Recompute::Attention, Recompute::Full}) {
    const TransformerOptions options{precision, sp, recompute};
    TransformerLM model(world, config, B, T, 1, options);
    const double measured = double(model.activation_bytes_per_layer());
    const double expected = documented(config, B, T, world.size(), options);
    const std::string mode = recompute_name(recompute);
    EXPECT_NEAR(measured, expected, 0.15 * expected) << mode << ": the acceptance bound";
    EXPECT_NEAR(measured, expected, 1.0) << mode << ": the formula counts every buffer, so it is exact";
    EXPECT_NEAR(activation_bytes_per_layer_formula({config, B, T, world.size(), options}), expected, 1e-6 * expected)
        << mode << ": what bench prints";
    EXPECT_GT(model.activation_bytes(), config.layers * model.activation_bytes_per_layer()) << "plus the LM head's";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, MemoryTest,
    ::testing::Combine(::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama), ::testing::Bool(),
                       ::testing::Values(Precision::F32, Precision::BF16)),
    [](const auto& info) { return testing::mode_name(info); });

TEST(Memory, KorthikantiScaledToTwoBytesIsThePapersFormula) {
  ModelConfig c = small(ModelFamily::Gpt2);
  const double s = 16, b = 2, h = 64, a = 8, t = 4;
  MemoryShape m{c, 2, 16, 4, {}};
  m.tp = 1;
  EXPECT_DOUBLE_EQ(korthikanti_activation_bytes_per_layer(m, 2), s * b * h * (34 + 5 * a * s / h));
  m.tp = 4;
  EXPECT_DOUBLE_EQ(korthikanti_activation_bytes_per_layer(m, 2), s * b * h * (10 + 24 / t + 5 * a * s / (h * t)));
  m.options.sequence_parallel = true;
  EXPECT_DOUBLE_EQ(korthikanti_activation_bytes_per_layer(m, 2), s * b * h * (34 / t + 5 * a * s / (h * t)));
  m.options.recompute = Recompute::Attention;
  EXPECT_DOUBLE_EQ(korthikanti_activation_bytes_per_layer(m, 2), s * b * h * 34 / t);
  m.options.sequence_parallel = false;
  m.options.recompute = Recompute::Full;
  EXPECT_DOUBLE_EQ(korthikanti_activation_bytes_per_layer(m, 2), 2 * s * b * h);
}

TEST(Memory, ParameterBytesAreSixteenPerElementHeldAndOneTthOfTheShardedPart) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = small(ModelFamily::Llama);
  TransformerLM model(world, config, 2, 16, 1);
  int64_t held = 0, sharded_global = 0, replicated = 0;
  for (const Parameter* p : model.parameters()) {
    held += p->value.numel();
    if (p->replicated())
      replicated += p->value.numel();
    else
      sharded_global += shape_numel(p->global_shape);
  }
  EXPECT_EQ(parameter_bytes_per_rank(model.parameters()), 16 * held);
  EXPECT_EQ(sharded_global % world.size(), 0) << "every shard is even";
  EXPECT_DOUBLE_EQ(parameter_bytes_expected(model.parameters(), world.size()),
                   16.0 * double(replicated + sharded_global / world.size()));
  EXPECT_EQ(double(parameter_bytes_per_rank(model.parameters())),
            parameter_bytes_expected(model.parameters(), world.size()));
}

}  // namespace
}  // namespace tensorpar
