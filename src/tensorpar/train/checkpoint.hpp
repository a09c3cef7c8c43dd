// Training checkpoints that a killed job cannot corrupt, and that resume at any TP/DP degree.
//
// OUT/step_00000100/            one checkpoint after 100 optimizer steps
//   model.safetensors, config.json   the Hugging Face model, exactly as save_hf_checkpoint writes it
//                                    (eval, generate and train --init load the directory directly)
//   optimizer.safetensors            AdamW's moments keyed "<hf key>.exp_avg" / ".exp_avg_sq", sliced
//                                    like the weights, so they reshard at any TP degree
//   trainer_state.json               step, AdamW step count, LR-schedule position, data positions
//                                    per DP rank, RNG seed, model config + training options, and
//                                    the size + CRC32C of every other file
// A checkpoint is written into OUT/.tmp.step_00000100/, every file fsynced, the directory fsynced,
// renamed to step_00000100 and OUT fsynced: a step_ directory exists complete or not at all.
// Anything named OUT/.tmp.* is a leftover of a killed job, removed when the next run starts.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"

namespace tensorpar {

struct CheckpointState {
  int64_t step = 0;         // optimizer steps completed; the resumed run starts at this 0-based step
  int64_t adamw_steps = 0;  // AdamW updates taken (fewer than step when non-finite steps were skipped)
  int tp_size = 1, dp_size = 1;
  int64_t batch = 0, seq = 0, grad_accum = 1;
  std::vector<int64_t> data_positions;  // the training loader's next position on each DP rank
  uint64_t seed = 0;
  ModelConfig model;
  nlohmann::json options;  // the run's training options, as given (for the record and for humans)
};

// "step_00000100"
std::string checkpoint_dir_name(int64_t step);

// AdamW's moments as the checkpoint files key them (".exp_avg", ".exp_avg_sq" of parameters()[i]).
// With ZeRO-1 the trainer passes the shards gathered whole instead (ZeroOptimizer::gather_moments):
// the files are the same either way, so a checkpoint resumes with or without --zero.
std::vector<io::ParameterTensors> adamw_moments(AdamW& optimizer);

// Collective over world (tp and dp are the mesh's groups): writes OUT/step_<state.step>/ as above,
// `moments` (read on DP rank 0 only) as adamw_moments gives them;
// then, with keep > 0, removes the oldest complete checkpoints beyond `keep`. Returns the directory.
// On any failure (disk full, unwritable OUT) every rank throws the same IoError, the temporary
// directory is removed and earlier checkpoints are untouched. Pipeline parallelism: `model` is this
// rank's stage, dp its stage's replicas and model_parallel every stage of one replica (Mesh): each
// stage writes its own tensors into the same files, which load at any (T, P, D).
std::string save_checkpoint(ProcessGroup& world, ProcessGroup& tp, ProcessGroup& dp, TransformerLM& model,
                            const std::vector<io::ParameterTensors>& moments, const CheckpointState& state,
                            const std::string& out, int keep, ProcessGroup* model_parallel = nullptr);

// DIR/trainer_state.json; verify: also the size and CRC32C of every file it lists. IoError naming the file.
CheckpointState read_checkpoint_state(const std::string& dir, bool verify);

// Collective over tp: the weights and AdamW's moments (into `moments`, as adamw_moments gives them)
// from DIR, at this TP degree (the step count is in the state).
void load_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::vector<io::ParameterTensors>& moments,
                     const std::string& dir);

// The newest OUT/step_* directory ("" if none).
std::string latest_checkpoint(const std::string& out);

// Removes OUT/.tmp.* (temporary checkpoints of killed jobs). Single process (rank 0).
void remove_checkpoint_temporaries(const std::string& out);

}  // namespace tensorpar
