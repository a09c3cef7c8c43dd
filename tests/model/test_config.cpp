// ModelConfig from config.json and flags: every size range-checked, every key type-checked, unknown
// families and activations refused, the parameter count overflow-checked, and a configuration whose
// buffers exceed this machine's memory refused before anything is allocated.
#include <gtest/gtest.h>

#include <string>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {
namespace {

const nlohmann::json kGpt2 = {{"model_type", "gpt2"}, {"vocab_size", 256}, {"n_positions", 64},
                              {"n_embd", 32},         {"n_layer", 2},      {"n_head", 4}};
const nlohmann::json kLlama = {{"model_type", "llama"},    {"vocab_size", 256},      {"hidden_size", 32},
                               {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"intermediate_size", 64}};

std::string error_of(const nlohmann::json& j) {
  try {
    ModelConfig::from_hf_json(j, "dir/config.json");
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no error";
}

nlohmann::json with(nlohmann::json j, const std::string& key, const nlohmann::json& value) {
  if (value.is_null()) j.erase(key);
  else j[key] = value;
  return j;
}

TEST(ModelConfig, GoodConfigsParse) {
  EXPECT_EQ(ModelConfig::from_hf_json(kGpt2).hidden, 32);
  EXPECT_EQ(ModelConfig::from_hf_json(kLlama).ffn_hidden, 64);
}

struct BadKey {
  const char* name;
  nlohmann::json base;
  const char* key;
  nlohmann::json value;  // null: the key removed
  const char* message;
};

TEST(ModelConfig, BadValuesAreRefusedNamingFileAndKey) {
  const BadKey cases[] = {
      {"missing vocab", kGpt2, "vocab_size", nullptr, "missing key 'vocab_size'"},
      {"vocab 2^59", kGpt2, "vocab_size", int64_t(1) << 59, "vocab size 576460752303423488 is out of range"},
      {"vocab beyond int64", kGpt2, "vocab_size", uint64_t(1) << 63, "beyond 64-bit integers"},
      {"negative layers", kGpt2, "n_layer", -2, "layers size -2 is out of range"},
      {"zero heads", kGpt2, "n_head", 0, "heads size 0 is out of range"},
      {"fractional hidden", kGpt2, "n_embd", 32.5, "key 'n_embd' is 32.5, not an integer"},
      {"boolean layers", kGpt2, "n_layer", true, "key 'n_layer' is true, not an integer"},
      {"string positions", kGpt2, "n_positions", "64", "not an integer"},
      {"negative n_inner", kGpt2, "n_inner", -8, "MLP size -8 is out of range"},
      {"negative eps", kGpt2, "layer_norm_epsilon", -1e-5, "norm epsilon"},
      {"huge eps", kGpt2, "layer_norm_epsilon", 1e300, "norm epsilon"},
      {"eps string", kGpt2, "layer_norm_epsilon", "small", "not a number"},
      {"activation", kGpt2, "activation_function", "relu", "activation_function 'relu' is not supported"},
      {"model_type", kGpt2, "model_type", "bert", "model_type 'bert' is not supported"},
      {"model_type number", kGpt2, "model_type", 3, "key 'model_type' is 3, not a string"},
      {"llama act", kLlama, "hidden_act", "gelu", "hidden_act 'gelu' is not supported"},
      {"llama kv", kLlama, "num_key_value_heads", 3, "not a multiple of 3 key/value heads"},
      {"llama negative kv", kLlama, "num_key_value_heads", -1, "key/value heads -1 is out of range"},
      {"llama theta", kLlama, "rope_theta", -10000.0, "rope_theta"},
      {"llama tie", kLlama, "tie_word_embeddings", "yes", "not a boolean"},
      {"llama ffn missing", kLlama, "intermediate_size", nullptr, "missing key 'intermediate_size'"},
      {"hidden not divisible", kGpt2, "n_embd", 30, "not divisible by 4 heads"},
      // every size fits alone; the parameter count does not
      {"parameter overflow", with(kGpt2, "n_embd", int64_t(1) << 30), "vocab_size", int64_t(1) << 30,
       "parameter count"},
  };
  for (const BadKey& c : cases) {
    const std::string m = error_of(with(c.base, c.key, c.value));
    EXPECT_NE(m.find(c.message), std::string::npos) << c.name << ": " << m;
    EXPECT_EQ(m.rfind("dir/config.json: ", 0), 0u) << c.name << ": " << m;
  }
  EXPECT_NE(error_of(nlohmann::json::array()).find("not a JSON object"), std::string::npos);
}

// A model whose parameters, activations and logits exceed the machine's memory is refused by the
// check the constructor runs first, with the bytes it needs; so is a batch x seq that overflows.
TEST(ModelConfig, SizeCheckRefusesWhatCannotFit) {
  ModelConfig c = ModelConfig::from_hf_json(kGpt2);
  EXPECT_NO_THROW(TransformerLM::check_size(c, 1, 4, 64));
  try {
    TransformerLM::check_size(c, 1, int64_t(1) << 40, 64);
    ADD_FAILURE() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("GB but this machine has"), std::string::npos) << e.what();
  }
  EXPECT_THROW(TransformerLM::check_size(c, 1, int64_t(1) << 62, 64), ConfigError);  // batch x seq overflows
  EXPECT_THROW(TransformerLM::check_size(c, 1, 0, 64), ConfigError);
  EXPECT_THROW(TransformerLM::check_size(c, 1, 4, 65), ConfigError);  // beyond n_positions
  c.vocab_size = int64_t(1) << 30;  // 2^30 x 32 x 8 bytes of parameters: 256 GB
  if (physical_memory_bytes() < (int64_t(1) << 38)) {
    EXPECT_THROW(TransformerLM::check_size(c, 1, 1, 1), ConfigError);
  }
}

}  // namespace
}  // namespace tensorpar
