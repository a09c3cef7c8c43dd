// Hugging Face checkpoints (model.safetensors + config.json) of GPT2LMHeadModel and
// LlamaForCausalLM, loaded and saved at any tensor-parallel degree. Each rank reads and writes
// only its own slices: loading memory-maps the file and touches the rank's rows/columns; saving
// lets every rank pwrite its slices into one file laid out by rank 0, so no rank ever gathers the
// whole model.
#pragma once
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar::io {

// Global rows [row_start, row_start + rows) of a parameter (along dim 0, at TP=1) are the whole
// Hugging Face tensor `key` of shape file_shape; transposed: the file holds them as [cols, rows]
// (GPT-2's Conv1D layout).
struct HfPiece {
  std::string key;
  int64_t row_start = 0, rows = 0;
  bool transposed = false;
  Shape file_shape;
};
std::vector<HfPiece> hf_pieces(const ModelConfig& config, const Parameter& parameter);

// config.json of a model directory; IoError/ConfigError naming the file.
ModelConfig read_model_config(const std::string& dir);

// Collective over tp: fills every parameter of `model` from dir/model.safetensors (or its sharded
// index). Every rank throws the same IoError naming the file and key if anything is wrong.
void load_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir);

// Collective over tp: writes dir/model.safetensors and dir/config.json (F32) atomically.
void save_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir);

}  // namespace tensorpar::io
