// Inference with int8/int4 blockwise-quantized weights (TransformerLM::quantize_weights) at the
// world's TP degree against the serial (TP=1) quantized model and the serial f32 model, in the same test.
//
// What is compared, and why these tolerances: each rank quantizes its own slice, and with blocks
// along K that never straddle a split (K per partition is a multiple of 32) the quantized weights
// are bit-identical at every TP degree. What differs between degrees is only the f32 summation
// order of the row-parallel all-reduce (~1e-6 relative), which can move an activation across a Q8_0
// rounding boundary in a later layer: one activation element then changes by one step d_x = max|x|/127
// of its block, i.e. the logits by O(d_x |w|) -- at most 1e-3 of the logit scale on these models
// (measured worst below ~2e-4). Greedy tokens must be identical at TP=1 and TP=t (the test is
// deterministic: same seed, deterministic kernels and reduction order for a given degree).
// Against f32 the quantization error itself, on random (untrained, so sensitive) weights: the
// per-matmul error is bounded in tests/kernels/test_quantized_matmul.cpp and the loss change on a
// trained model in tests/cli/test_quantized_eval.cpp; here only a sanity bound with headroom over
// what these models measure (int8 3.2%, int4 40% of max|logit|: a Q4_0 step is max|w|/8, so about 9%
// RMS error per weight of a Gaussian block, compounded over two layers): 5% and 60%.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "random_weights.hpp"
#include "tensorpar/infer/generator.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

ModelConfig quant_config(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;
  c.max_seq = 16;
  c.hidden = 128;  // attention output: 128 / 4 = 32 inputs per rank at TP=4
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = family == ModelFamily::Llama ? 2 : 0;  // replicated KV heads at TP=4
  c.ffn_hidden = family == ModelFamily::Llama ? 256 : 0;  // GPT-2: 4 x hidden
  c.tie_embeddings = family == ModelFamily::Gpt2;
  c.rope_theta = 10000.0;
  return c;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

using Case = std::tuple<ModelFamily, WeightFormat>;
class QuantizedWeights : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizedWeights, LogitsAndGreedyTokensMatchSerialAndStayNearF32) {
  const auto [family, format] = GetParam();
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  const ModelConfig config = quant_config(family);
  constexpr int64_t B = 2, T = 6, steps = 6;
  TransformerLM f32(self, config, B, T, 1), serial(self, config, B, T, 1), parallel(world, config, B, T, 1);
  for (TransformerLM* m : {&f32, &serial, &parallel}) testing::randomize_weights(*m, 7, 0.1f);
  int64_t before = 0, after = 0;
  for (Parameter* p : parallel.parameters()) before += p->value.nbytes() + p->grad.nbytes();
  serial.quantize_weights(format);
  parallel.quantize_weights(format);
  for (Parameter* p : parallel.parameters()) after += p->value.nbytes() + p->grad.nbytes();
  EXPECT_EQ(parallel.weight_format(), format);
  EXPECT_EQ(parallel.parameter(family == ModelFamily::Llama ? "model.layers.0.mlp.down_proj.weight" : "h.0.mlp.c_proj.weight")
                .value.numel(),
            0)
      << "the f32 copy of a quantized matrix is freed";
  EXPECT_LT(after, before / 2) << "f32 values and gradients of the block linears are freed";

  const std::vector<int32_t> tokens = testing::random_tokens(5, size_t(B * T));
  std::vector<float> want(size_t(B * config.vocab_size)), got(want.size()), exact(want.size());
  f32.last_logits(exact.data(), tokens.data(), B, T);
  serial.last_logits(want.data(), tokens.data(), B, T);
  parallel.last_logits(got.data(), tokens.data(), B, T);
  const double scale = max_abs(exact);
  ASSERT_GT(scale, 0.1) << "logits far from zero, so the relative bounds mean something";
  const double tp_diff = max_abs_diff(got, want) / scale;
  const double q_diff = max_abs_diff(want, exact) / scale;
  EXPECT_LE(tp_diff, 1e-3) << "TP=" << world.size() << " vs TP=1, " << weight_format_name(format);
  EXPECT_LE(q_diff, format == WeightFormat::Int8 ? 0.05 : 0.6) << weight_format_name(format) << " vs f32";
  EXPECT_GT(q_diff, 0.0) << "the quantized model really runs quantized";
  if (world.rank() == 0)
    std::printf("[ info ] %s TP=%d: max|dlogit|/max|logit| vs TP=1 %.2e, vs f32 %.2e\n",
                weight_format_name(format), world.size(), tp_diff, q_diff);

  // greedy decode (the GEMV path, M = B rows) with the KV cache: same tokens at TP=1 and TP=t
  const SamplingOptions greedy{0.0f, 0, 1.0f, 0};
  Generator gs(serial, B, T + steps), gp(parallel, B, T + steps);
  const GenerationResult rs = gs.generate(tokens.data(), T, steps, greedy);
  const GenerationResult rp = gp.generate(tokens.data(), T, steps, greedy);
  EXPECT_EQ(rp.tokens, rs.tokens) << "greedy tokens at TP=" << world.size() << " vs TP=1";

  EXPECT_THROW(parallel.backward(tokens.data(), tokens.data(), B, T), ConfigError) << "inference only";
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedWeights,
                         ::testing::Combine(::testing::Values(ModelFamily::Llama, ModelFamily::Gpt2),
                                            ::testing::Values(WeightFormat::Int8, WeightFormat::Int4)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == ModelFamily::Gpt2 ? "Gpt2" : "Llama") +
                                  weight_format_name(std::get<1>(info.param));
                         });

// Blocks may not straddle rows or the row-parallel split: hidden 48 is no multiple of 32 at any
// degree; hidden 64 over 4 ranks leaves 16 attention-output inputs per rank. Every rank throws.
TEST(QuantizedWeightsShapes, RefusesBlocksThatWouldStraddle) {
  ProcessGroup world = ProcessGroup::world();
  ModelConfig c = quant_config(ModelFamily::Llama);
  c.hidden = 48;
  c.heads = 4;
  c.kv_heads = 4;
  {
    TransformerLM m(world, c, 1, 4, 1);
    EXPECT_THROW(m.quantize_weights(WeightFormat::Int8), ShapeError);
  }
  c.hidden = 64;
  TransformerLM m(world, c, 1, 4, 1);
  if (world.size() == 4)
    EXPECT_THROW(m.quantize_weights(WeightFormat::Int4), ShapeError);
  else
    EXPECT_NO_THROW(m.quantize_weights(WeightFormat::Int4));
}

}  // namespace
}  // namespace tensorpar
