// Hugging Face semantics, checked against an independent reference: a one-layer GPT-2 and a one-layer
// Llama (grouped-query, 4 heads over 2 KV heads, rope_theta 50 so both RoPE frequencies turn fast)
// whose logits this file computes with plain double loops straight from the HF tensors of the saved
// checkpoint (q_proj/k_proj/v_proj, Conv1D c_attn [in, 3C], ...), written from the HF modelling code:
//   GPT-2: LayerNorm(eps) with biased variance, GELU tanh ("gelu_new"), scale 1/sqrt(hd), tied head;
//   Llama: RMSNorm x * rsqrt(mean(x^2) + eps) * w, RoPE rotate_half with inv_freq = theta^(-2i/hd),
//          query head h reads KV head h / (H / KV), SwiGLU down(silu(gate x) * up x), untied head.
// The model runs at the world's TP degree (at 4 ranks the Llama's KV heads are replicated).
#include <gtest/gtest.h>

#include <cmath>

#include "random_weights.hpp"
#include "temp_dir.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // (T, n)

struct Tensors {
  io::SafetensorsFile file;
  std::vector<float> operator()(const std::string& key) const {
    const auto& info = file.info(key);
    int64_t n = 1;
    for (int64_t d : info.shape) n *= d;
    const int64_t rows = info.shape.size() > 1 ? info.shape[0] : 1;
    std::vector<float> out(static_cast<size_t>(n));
    file.read_block(key, 0, rows, 0, n / rows, out.data(), n / rows);
    return out;
  }
};

// HF nn.Linear: y = W x, W [out, in]
Vec linear(const std::vector<float>& W, const Vec& x, size_t out) {
  Vec y(out, 0.0);
  for (size_t o = 0; o < out; ++o)
    for (size_t i = 0; i < x.size(); ++i) y[o] += double(W[o * x.size() + i]) * x[i];
  return y;
}
// HF Conv1D: y = x W + b, W [in, out]
Vec conv1d(const std::vector<float>& W, const std::vector<float>& b, const Vec& x) {
  const size_t out = b.size();
  Vec y(out);
  for (size_t o = 0; o < out; ++o) {
    y[o] = b[o];
    for (size_t i = 0; i < x.size(); ++i) y[o] += x[i] * double(W[i * out + o]);
  }
  return y;
}
Vec layer_norm(const Vec& x, const std::vector<float>& w, const std::vector<float>& b, double eps) {
  double mean = 0, var = 0;
  for (double v : x) mean += v / double(x.size());
  for (double v : x) var += (v - mean) * (v - mean) / double(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  return y;
}
Vec rms_norm(const Vec& x, const std::vector<float>& w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v / double(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] / std::sqrt(ms + eps) * w[i];
  return y;
}
double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double silu(double x) { return x / (1 + std::exp(-x)); }
// rotate_half on each head of v (heads of hd contiguous values) at position pos
void rope(Vec& v, int64_t hd, int64_t pos, double theta) {
  const int64_t half = hd / 2;
  for (size_t h = 0; h < v.size() / size_t(hd); ++h)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos) / std::pow(theta, double(2 * i) / double(hd));
      double& a = v[h * size_t(hd) + size_t(i)];
      double& b = v[h * size_t(hd) + size_t(i + half)];
      const double x = a, y = b;
      a = x * std::cos(angle) - y * std::sin(angle);
      b = y * std::cos(angle) + x * std::sin(angle);
    }
}
// causal attention; query head h uses kv head h / (H / KV)
Mat attention(const Mat& q, const Mat& k, const Mat& v, int64_t H, int64_t KV, int64_t hd) {
  const size_t T = q.size();
  Mat out(T, Vec(size_t(H * hd), 0.0));
  for (size_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      Vec s(t + 1);
      double m = -1e300, z = 0;
      for (size_t j = 0; j <= t; ++j) {
        s[j] = 0;
        for (int64_t c = 0; c < hd; ++c) s[j] += q[t][size_t(h * hd + c)] * k[j][size_t(g * hd + c)];
        s[j] /= std::sqrt(double(hd));
        m = std::max(m, s[j]);
      }
      for (double& x : s) z += (x = std::exp(x - m));
      for (size_t j = 0; j <= t; ++j)
        for (int64_t c = 0; c < hd; ++c) out[t][size_t(h * hd + c)] += s[j] / z * v[j][size_t(g * hd + c)];
    }
  return out;
}

Mat gpt2_logits(const Tensors& w, const ModelConfig& c, const std::vector<int32_t>& tokens) {
  const size_t T = tokens.size(), C = size_t(c.hidden);
  const auto wte = w("wte.weight"), wpe = w("wpe.weight");
  Mat x(T, Vec(C)), q(T), k(T), v(T);
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < C; ++i) x[t][i] = double(wte[size_t(tokens[t]) * C + i]) + wpe[t * C + i];
  for (size_t t = 0; t < T; ++t) {
    const Vec qkv = conv1d(w("h.0.attn.c_attn.weight"), w("h.0.attn.c_attn.bias"),
                           layer_norm(x[t], w("h.0.ln_1.weight"), w("h.0.ln_1.bias"), c.norm_eps));
    q[t] = Vec(qkv.begin(), qkv.begin() + long(C));
    k[t] = Vec(qkv.begin() + long(C), qkv.begin() + long(2 * C));
    v[t] = Vec(qkv.begin() + long(2 * C), qkv.end());
  }
  const Mat att = attention(q, k, v, c.heads, c.heads, c.head_dim());
  Mat logits(T);
  for (size_t t = 0; t < T; ++t) {
    const Vec a = conv1d(w("h.0.attn.c_proj.weight"), w("h.0.attn.c_proj.bias"), att[t]);
    for (size_t i = 0; i < C; ++i) x[t][i] += a[i];
    Vec h = conv1d(w("h.0.mlp.c_fc.weight"), w("h.0.mlp.c_fc.bias"),
                   layer_norm(x[t], w("h.0.ln_2.weight"), w("h.0.ln_2.bias"), c.norm_eps));
    for (double& e : h) e = gelu_tanh(e);
    const Vec m = conv1d(w("h.0.mlp.c_proj.weight"), w("h.0.mlp.c_proj.bias"), h);
    for (size_t i = 0; i < C; ++i) x[t][i] += m[i];
    logits[t] = linear(wte, layer_norm(x[t], w("ln_f.weight"), w("ln_f.bias"), c.norm_eps), size_t(c.vocab_size));
  }
  return logits;
}

Mat llama_logits(const Tensors& w, const ModelConfig& c, const std::vector<int32_t>& tokens) {
  const size_t T = tokens.size(), C = size_t(c.hidden);
  const int64_t H = c.heads, KV = c.kv_heads_or_heads(), hd = c.head_dim();
  const std::string l = "model.layers.0.";
  const auto embed = w("model.embed_tokens.weight");
  Mat x(T, Vec(C)), q(T), k(T), v(T);
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < C; ++i) x[t][i] = embed[size_t(tokens[t]) * C + i];
  for (size_t t = 0; t < T; ++t) {
    const Vec h = rms_norm(x[t], w(l + "input_layernorm.weight"), c.norm_eps);
    q[t] = linear(w(l + "self_attn.q_proj.weight"), h, size_t(H * hd));
    k[t] = linear(w(l + "self_attn.k_proj.weight"), h, size_t(KV * hd));
    v[t] = linear(w(l + "self_attn.v_proj.weight"), h, size_t(KV * hd));
    rope(q[t], hd, int64_t(t), c.rope_theta);
    rope(k[t], hd, int64_t(t), c.rope_theta);
  }
  const Mat att = attention(q, k, v, H, KV, hd);
  Mat logits(T);
  const size_t F = size_t(c.ffn_or_default());
  for (size_t t = 0; t < T; ++t) {
    const Vec a = linear(w(l + "self_attn.o_proj.weight"), att[t], C);
    for (size_t i = 0; i < C; ++i) x[t][i] += a[i];
    const Vec h = rms_norm(x[t], w(l + "post_attention_layernorm.weight"), c.norm_eps);
    const Vec gate = linear(w(l + "mlp.gate_proj.weight"), h, F), up = linear(w(l + "mlp.up_proj.weight"), h, F);
    Vec act(F);
    for (size_t i = 0; i < F; ++i) act[i] = silu(gate[i]) * up[i];
    const Vec m = linear(w(l + "mlp.down_proj.weight"), act, C);
    for (size_t i = 0; i < C; ++i) x[t][i] += m[i];
    logits[t] = linear(w("lm_head.weight"), rms_norm(x[t], w("model.norm.weight"), c.norm_eps), size_t(c.vocab_size));
  }
  return logits;
}

class HfNumerics : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(HfNumerics, LogitsEqualAnIndependentReferenceFromTheHfTensors) {
  ProcessGroup world = ProcessGroup::world();
  ModelConfig c;
  c.family = GetParam();
  c.vocab_size = 20;
  c.max_seq = 8;
  c.hidden = 16;
  c.layers = 1;
  c.heads = 4;
  if (c.family == ModelFamily::Llama) {
    c.kv_heads = 2;
    c.ffn_hidden = 24;
    c.tie_embeddings = false;
    c.norm_eps = 1e-6f;
    c.rope_theta = 50.0;
  }
  TransformerLM model(world, c, 1, c.max_seq, 1);
  testing::randomize_weights(model, 5, 0.4f);
  testing::SharedTempDir dir(world);
  io::save_hf_checkpoint(world, model, dir.path());
  const Tensors w{io::SafetensorsFile::open(dir.path("model.safetensors"))};
  const std::vector<int32_t> tokens = {3, 17, 0, 9, 9, 12, 19, 4};
  const Mat want = c.family == ModelFamily::Gpt2 ? gpt2_logits(w, c, tokens) : llama_logits(w, c, tokens);
  std::vector<float> got(size_t(c.vocab_size));
  for (int64_t T = 1; T <= c.max_seq; ++T) {  // the logits at position T-1 are those of the prefix of length T
    model.last_logits(got.data(), tokens.data(), 1, T);
    const std::vector<float> expected(want[size_t(T - 1)].begin(), want[size_t(T - 1)].end());
    EXPECT_TRUE(testing::all_close(got, expected, 2e-5, 2e-5)) << "position " << T - 1;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfNumerics, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

}  // namespace
}  // namespace tensorpar
