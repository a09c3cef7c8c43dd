// Hugging Face checkpoints (model.safetensors + config.json) of GPT2LMHeadModel and
// LlamaForCausalLM, loaded and saved at any tensor-parallel degree. Each rank reads and writes
// only its own slices: loading memory-maps the file and touches the rank's rows/columns; saving
// lets every rank pwrite its slices into one file laid out by rank 0, so no rank ever gathers the
// whole model.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/io/model_config_file.hpp"  // read_model_config, which every loader calls first
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

// Collective over tp: fills every parameter of `model` from dir/model.safetensors (or its sharded
// index). Every rank throws the same IoError naming the file and key if anything is wrong.
void load_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir);

// Collective over tp: writes dir/model.safetensors and dir/config.json (F32). Both are written
// into dir/.tmp.save.<pid>/ first (a killed save leaves the old files as they were; the next save
// removes such leftovers), then a stale sharded index and its shards are removed (loaders would
// prefer them) and config.json and model.safetensors are renamed into place, in that order.
// model.safetensors records the CRC32C of its config.json, so the only window left between the
// two renames (new config.json, old weights) fails to load with a clear error instead of loading
// silently wrong. Training checkpoints (train/checkpoint.hpp) are whole directories renamed at once.
// Pipeline parallelism: `model` is one stage and `model_parallel` the ranks of every stage of the
// replica (tp x pp); each stage writes its own layers' tensors into the one file, laid out from the
// tensors every rank announces (the last stage's copy of a tied embedding is left to the first).
void save_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir,
                        ProcessGroup* model_parallel = nullptr);

// Collective over tp: model.safetensors + config.json written into an existing directory that no
// loader looks at yet (a checkpoint's temporary directory), each file fsynced.
void write_hf_files(ProcessGroup& tp, TransformerLM& model, const std::string& dir,
                    ProcessGroup* model_parallel = nullptr);

// Removes what killed saves left in a model directory: "*.tmp.<pid>" files and .tmp.save.* dirs.
void remove_stale_save_files(const std::string& dir);

// Per-parameter tensors in the parameters' local (sharded) layout, saved and loaded under the
// Hugging Face key + suffix with the same slicing as the weights, so they reshard at any TP degree:
// the weights (suffix "", data = value), or AdamW's moments (".exp_avg", ".exp_avg_sq").
struct ParameterTensors {
  std::string suffix;
  std::function<float*(size_t)> data;  // local data of parameters[i]
};
// Collective over tp: one safetensors file at `path` (F32), written via "<path>.tmp.<pid>" + fsync + rename.
// With `model_parallel` (a group of several stages, each passing its own parameters) collective over it.
void save_parameter_tensors(ProcessGroup& tp, const ModelConfig& config, const std::vector<Parameter*>& parameters,
                            const std::vector<ParameterTensors>& sets, const std::string& path,
                            const std::map<std::string, std::string>& metadata = {},
                            ProcessGroup* model_parallel = nullptr);
// Collective over tp: fills each set's tensors from `path`; the same IoError on every rank if anything is wrong.
void load_parameter_tensors(ProcessGroup& tp, const ModelConfig& config, const std::vector<Parameter*>& parameters,
                            const std::vector<ParameterTensors>& sets, const std::string& path);

}  // namespace tensorpar::io
