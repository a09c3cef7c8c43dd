// A model directory's config.json (Hugging Face's form), read on its own: every command that opens a
// model reads it before anything else, and it is all the config fuzzer needs (no model, no MPI).
#pragma once
#include <string>

#include "tensorpar/model/config.hpp"

namespace tensorpar::io {

// dir/config.json; IoError if it cannot be opened, ConfigError naming the file if it is not a valid
// GPT2LMHeadModel or LlamaForCausalLM configuration.
ModelConfig read_model_config(const std::string& dir);

}  // namespace tensorpar::io
