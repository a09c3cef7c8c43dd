#include "tensorpar/model/config.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <type_traits>
#include <utility>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar {

void ModelConfig::validate(int tp) const {
  // every size is an int64 from a flag or config.json: bound each one before any product of them is formed
  const std::pair<const char*, int64_t> sizes[] = {{"vocab", vocab_size}, {"seq (positions)", max_seq},
                                                   {"hidden", hidden},    {"layers", layers},
                                                   {"heads", heads}};
  for (const auto& [name, value] : sizes)
    TP_CHECK(value > 0 && value <= kMaxModelDim, ConfigError,
             "model {} size {} is out of range; it must be between 1 and {}", name, value, kMaxModelDim);
  TP_CHECK(kv_heads >= 0 && kv_heads <= kMaxModelDim, ConfigError,
           "key/value heads {} is out of range; it must be between 1 and {} (0: as many as heads)", kv_heads,
           kMaxModelDim);
  TP_CHECK(ffn_hidden >= 0 && ffn_hidden <= kMaxModelDim, ConfigError,
           "MLP size {} is out of range; it must be between 1 and {} (0: 4 x hidden)", ffn_hidden, kMaxModelDim);
  TP_CHECK(std::isfinite(norm_eps) && norm_eps > 0, ConfigError, "norm epsilon {} must be a positive finite number",
           norm_eps);
  TP_CHECK(std::isfinite(rope_theta) && rope_theta > 0, ConfigError, "rope_theta {} must be a positive finite number",
           rope_theta);
  TP_CHECK(tp >= 1, ConfigError, "tensor-parallel degree {} must be at least 1", tp);
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
  parameter_count();  // throws if the parameter count overflows
}

int64_t ModelConfig::parameter_count() const {
  // sizes are bounded by validate(), but products of them can still pass 2^63: checked arithmetic
  const char* what = "parameter count";
  const auto mul = [&](int64_t a, int64_t b) { return checked_mul(a, b, what); };
  const auto add = [&](int64_t a, int64_t b) { return checked_add(a, b, what); };
  const int64_t h = hidden, f = ffn_or_default(), kv = mul(kv_heads_or_heads(), head_dim());
  if (family == ModelFamily::Gpt2) {
    const int64_t qkv = add(mul(h, add(h, mul(2, kv))), add(h, mul(2, kv)));
    const int64_t block = add(add(add(mul(4, h), qkv), add(mul(h, h), h)), add(add(mul(h, f), f), add(mul(f, h), h)));
    return add(add(mul(vocab_size, h), mul(max_seq, h)), add(mul(layers, block), mul(2, h)));
  }
  const int64_t block = add(add(mul(2, h), mul(h, add(h, mul(2, kv)))), add(mul(h, h), mul(mul(3, h), f)));
  return add(add(mul(mul(vocab_size, h), tie_embeddings ? 1 : 2), mul(layers, block)), h);
}

namespace {

// config.json values are checked for their JSON type: nlohmann would otherwise turn 12.7 or true
// into the integer 12 or 1, and a wrong type into an exception that names no key.
template <class T>
bool has_type(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  else if constexpr (std::is_same_v<T, std::string>) return v.is_string();
  else if constexpr (std::is_integral_v<T>) return v.is_number_integer();
  else return v.is_number();
}

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else return "a number";
}

template <class T>
T get_checked(const nlohmann::json& j, const char* key, const std::string& where) {
  const nlohmann::json& v = j.at(key);
  TP_CHECK(has_type<T>(v), ConfigError, "{}: key '{}' is {}, not {}; fix the config file", where, key, v.dump(),
           type_name<T>());
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // integers beyond int64 (nlohmann keeps them as uint64) must not wrap to negatives
    TP_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX), ConfigError,
             "{}: key '{}' is {}, beyond 64-bit integers; fix the config file", where, key, v.dump());
  }
  return v.get<T>();
}

template <class T>
T required(const nlohmann::json& j, const char* key, const std::string& where) {
  TP_CHECK(j.contains(key) && !j.at(key).is_null(), ConfigError, "{}: missing key '{}'", where, key);
  return get_checked<T>(j, key, where);
}

template <class T>
T optional(const nlohmann::json& j, const char* key, T fallback, const std::string& where) {
  return j.contains(key) && !j.at(key).is_null() ? get_checked<T>(j, key, where) : fallback;
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
  const std::string type = optional<std::string>(j, "model_type", "", where);
  if (type == "gpt2" || (type.empty() && j.contains("n_embd"))) {
    c.family = ModelFamily::Gpt2;
    c.vocab_size = required<int64_t>(j, "vocab_size", where);
    c.max_seq = required<int64_t>(j, "n_positions", where);
    c.hidden = required<int64_t>(j, "n_embd", where);
    c.layers = required<int64_t>(j, "n_layer", where);
    c.heads = required<int64_t>(j, "n_head", where);
    c.ffn_hidden = optional<int64_t>(j, "n_inner", 0, where);
    c.norm_eps = optional<float>(j, "layer_norm_epsilon", 1e-5f, where);
    const std::string act = optional<std::string>(j, "activation_function", "gelu_new", where);
    TP_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", ConfigError,
             "{}: activation_function '{}' is not supported (GPT-2 uses gelu_new)", where, act);
    c.tie_embeddings = true;
  } else if (type == "llama" || type == "mistral" || (type.empty() && j.contains("intermediate_size"))) {
    c.family = ModelFamily::Llama;
    c.vocab_size = required<int64_t>(j, "vocab_size", where);
    c.max_seq = optional<int64_t>(j, "max_position_embeddings", 2048, where);
    c.hidden = required<int64_t>(j, "hidden_size", where);
    c.layers = required<int64_t>(j, "num_hidden_layers", where);
    c.heads = required<int64_t>(j, "num_attention_heads", where);
    c.kv_heads = optional<int64_t>(j, "num_key_value_heads", c.heads, where);
    c.ffn_hidden = required<int64_t>(j, "intermediate_size", where);
    c.norm_eps = optional<float>(j, "rms_norm_eps", 1e-6f, where);
    c.rope_theta = optional<double>(j, "rope_theta", 10000.0, where);
    c.tie_embeddings = optional<bool>(j, "tie_word_embeddings", false, where);
    TP_CHECK(!j.contains("rope_scaling") || j.at("rope_scaling").is_null(), ConfigError,
             "{}: rope_scaling is not supported", where);
    TP_CHECK(!optional<bool>(j, "attention_bias", false, where) && !optional<bool>(j, "mlp_bias", false, where), ConfigError,
             "{}: Llama models with biases are not supported", where);
    const std::string act = optional<std::string>(j, "hidden_act", "silu", where);
    TP_CHECK(act == "silu", ConfigError, "{}: hidden_act '{}' is not supported (Llama uses silu)", where, act);
  } else {
    throw ConfigError(fmt::format("{}: model_type '{}' is not supported; expected gpt2 or llama", where, type));
  }
  try {  // sizes in range before anyone multiplies them
    c.validate(1);
    c.parameter_count();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", where, e.what()));
  }
  return c;
}

}  // namespace tensorpar
