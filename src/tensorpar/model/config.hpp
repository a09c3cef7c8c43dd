// ModelConfig: the shape of a decoder-only transformer of the GPT-2 or Llama family, and its
// Hugging Face config.json form (GPT2LMHeadModel / LlamaForCausalLM).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

namespace tensorpar {

// Upper bound of every model dimension (vocab, positions, hidden, layers, heads, MLP size): token ids
// are int32, and products of two dimensions must stay far from 2^63.
inline constexpr int64_t kMaxModelDim = INT32_MAX;

enum class ModelFamily {
  Gpt2,  // pre-LN, LayerNorm, learned positions, GELU tanh MLP, biases, tied embeddings
  Llama  // pre-norm, RMSNorm, RoPE, SwiGLU MLP, no biases, GQA, tied or untied LM head
};

struct ModelConfig {
  ModelFamily family = ModelFamily::Gpt2;
  int64_t vocab_size = 256;
  int64_t max_seq = 256;  // n_positions / max_position_embeddings
  int64_t hidden = 768;
  int64_t layers = 4;
  int64_t heads = 12;
  int64_t kv_heads = 0;    // 0: heads (no GQA)
  int64_t ffn_hidden = 0;  // 0: 4 * hidden (GPT-2)
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  bool tie_embeddings = true;

  int64_t kv_heads_or_heads() const { return kv_heads > 0 ? kv_heads : heads; }
  int64_t ffn_or_default() const { return ffn_hidden > 0 ? ffn_hidden : 4 * hidden; }
  int64_t head_dim() const { return hidden / heads; }
  bool has_bias() const { return family == ModelFamily::Gpt2; }

  // Throws ConfigError with a one-line fix if a size is out of range (0, negative, > kMaxModelDim, a
  // non-finite epsilon), the shape is inconsistent, or it cannot be split over tp ranks.
  void validate(int tp_size) const;
  // Parameters at TP=1 (unpadded vocabulary); ConfigError if the count overflows 64 bits.
  int64_t parameter_count() const;

  nlohmann::json to_hf_json() const;
  // Accepts GPT2LMHeadModel and LlamaForCausalLM config.json files; ConfigError naming the file and
  // the missing key, the key of the wrong JSON type, or the value out of range (validate(1)).
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& where = "config.json");
};

}  // namespace tensorpar
