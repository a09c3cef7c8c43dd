#include "tensorpar/model/config.hpp"

#include "tensorpar/core/error.hpp"

namespace tensorpar {

void ModelConfig::validate(int tp) const {
  TP_CHECK(vocab_size > 0 && max_seq > 0 && hidden > 0 && layers > 0 && heads > 0, ConfigError,
           "model sizes must be positive (vocab {}, seq {}, hidden {}, layers {}, heads {})", vocab_size, max_seq,
           hidden, layers, heads);
  TP_CHECK(hidden % heads == 0, ConfigError,
           "hidden size {} is not divisible by {} heads; choose a hidden size that is a multiple of the head count",
           hidden, heads);
  TP_CHECK(heads % tp == 0, ConfigError,
           "{} attention heads cannot be split over {} tensor-parallel ranks; run with a number of ranks that divides "
           "{}",
           heads, tp, heads);
  const int64_t kv = kv_heads_or_heads();
  TP_CHECK(heads % kv == 0, ConfigError, "{} attention heads are not a multiple of {} key/value heads", heads, kv);
  // kv < tp: each KV head is replicated on the tp / kv ranks whose query heads use it
  TP_CHECK(kv % tp == 0 || tp % kv == 0, ConfigError,
           "{} key/value heads cannot be split over {} tensor-parallel ranks, nor replicated on them; run with a "
           "number of ranks that divides or is a multiple of {}",
           kv, tp, kv);
  TP_CHECK(ffn_or_default() % tp == 0, ConfigError,
           "MLP size {} cannot be split over {} tensor-parallel ranks", ffn_or_default(), tp);
  TP_CHECK(family != ModelFamily::Llama || head_dim() % 2 == 0, ConfigError,
           "RoPE needs an even head dimension (got {})", head_dim());
}

int64_t ModelConfig::parameter_count() const {
  const int64_t h = hidden, f = ffn_or_default(), kv = kv_heads_or_heads() * head_dim();
  if (family == ModelFamily::Gpt2) {
    const int64_t block = 2 * 2 * h + (h * (h + 2 * kv) + h + 2 * kv) + (h * h + h) + (h * f + f) + (f * h + h);
    return vocab_size * h + max_seq * h + layers * block + 2 * h;
  }
  const int64_t block = 2 * h + h * (h + 2 * kv) + h * h + 3 * h * f;
  return vocab_size * h * (tie_embeddings ? 1 : 2) + layers * block + h;
}

namespace {

template <class T>
T required(const nlohmann::json& j, const char* key, const std::string& where) {
  TP_CHECK(j.contains(key), ConfigError, "{}: missing key '{}'", where, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw ConfigError(fmt::format("{}: key '{}' has the wrong type ({})", where, key, j.at(key).dump()));
  }
}

// Absent or null: the fallback. Present with the wrong type: ConfigError, like required (found by
// fuzz/fuzz_model_config: a nlohmann type_error escaped from {"model_type": 320}).
template <class T>
T optional(const nlohmann::json& j, const char* key, const std::string& where, T fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw ConfigError(fmt::format("{}: key '{}' has the wrong type ({})", where, key, j.at(key).dump()));
  }
}

}  // namespace

nlohmann::json ModelConfig::to_hf_json() const {
  if (family == ModelFamily::Gpt2) {
    return {{"architectures", {"GPT2LMHeadModel"}},
            {"model_type", "gpt2"},
            {"vocab_size", vocab_size},
            {"n_positions", max_seq},
            {"n_ctx", max_seq},
            {"n_embd", hidden},
            {"n_layer", layers},
            {"n_head", heads},
            {"n_inner", ffn_hidden > 0 ? nlohmann::json(ffn_hidden) : nlohmann::json(nullptr)},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", norm_eps},
            {"resid_pdrop", 0.0},
            {"embd_pdrop", 0.0},
            {"attn_pdrop", 0.0},
            {"initializer_range", 0.02},
            {"tie_word_embeddings", true},
            {"bos_token_id", vocab_size - 1},
            {"eos_token_id", vocab_size - 1},
            {"torch_dtype", "float32"}};
  }
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab_size},
          {"max_position_embeddings", max_seq},
          {"hidden_size", hidden},
          {"intermediate_size", ffn_or_default()},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv_heads_or_heads()},
          {"hidden_act", "silu"},
          {"rms_norm_eps", norm_eps},
          {"rope_theta", rope_theta},
          {"tie_word_embeddings", tie_embeddings},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"torch_dtype", "float32"}};
}

ModelConfig ModelConfig::from_hf_json(const nlohmann::json& j, const std::string& where) {
  TP_CHECK(j.is_object(), ConfigError, "{}: not a JSON object", where);
  ModelConfig c;
  const std::string type = optional<std::string>(j, "model_type", where, "");
  if (type == "gpt2" || (type.empty() && j.contains("n_embd"))) {
    c.family = ModelFamily::Gpt2;
    c.vocab_size = required<int64_t>(j, "vocab_size", where);
    c.max_seq = required<int64_t>(j, "n_positions", where);
    c.hidden = required<int64_t>(j, "n_embd", where);
    c.layers = required<int64_t>(j, "n_layer", where);
    c.heads = required<int64_t>(j, "n_head", where);
    c.ffn_hidden = optional<int64_t>(j, "n_inner", where, 0);
    c.norm_eps = optional<float>(j, "layer_norm_epsilon", where, 1e-5f);
    const std::string act = optional<std::string>(j, "activation_function", where, "gelu_new");
    TP_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", ConfigError,
             "{}: activation_function '{}' is not supported (GPT-2 uses gelu_new)", where, act);
    c.tie_embeddings = true;
  } else if (type == "llama" || type == "mistral" || (type.empty() && j.contains("intermediate_size"))) {
    c.family = ModelFamily::Llama;
    c.vocab_size = required<int64_t>(j, "vocab_size", where);
    c.max_seq = optional<int64_t>(j, "max_position_embeddings", where, 2048);
    c.hidden = required<int64_t>(j, "hidden_size", where);
    c.layers = required<int64_t>(j, "num_hidden_layers", where);
    c.heads = required<int64_t>(j, "num_attention_heads", where);
    c.kv_heads = optional<int64_t>(j, "num_key_value_heads", where, c.heads);
    c.ffn_hidden = required<int64_t>(j, "intermediate_size", where);
    c.norm_eps = optional<float>(j, "rms_norm_eps", where, 1e-6f);
    c.rope_theta = optional<double>(j, "rope_theta", where, 10000.0);
    c.tie_embeddings = optional<bool>(j, "tie_word_embeddings", where, false);
    TP_CHECK(!j.contains("rope_scaling") || j.at("rope_scaling").is_null(), ConfigError,
             "{}: rope_scaling is not supported", where);
    TP_CHECK(!optional<bool>(j, "attention_bias", where, false) && !optional<bool>(j, "mlp_bias", where, false), ConfigError,
             "{}: Llama models with biases are not supported", where);
    const std::string act = optional<std::string>(j, "hidden_act", where, "silu");
    TP_CHECK(act == "silu", ConfigError, "{}: hidden_act '{}' is not supported (Llama uses silu)", where, act);
  } else {
    throw ConfigError(fmt::format("{}: model_type '{}' is not supported; expected gpt2 or llama", where, type));
  }
  return c;
}

}  // namespace tensorpar
