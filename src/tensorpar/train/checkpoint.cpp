#include "tensorpar/train/checkpoint.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/crc32c.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"

namespace tensorpar {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kFormat = "tensorpar-checkpoint-1";
const std::vector<std::string> kFiles = {"model.safetensors", "config.json", kOptimizerFile};

// step of a "step_XXXXXXXX" name, -1 for any other name
int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0 || name.size() <= 5) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// complete checkpoints under out, oldest first
std::vector<std::pair<int64_t, fs::path>> checkpoints(const std::string& out) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return found;
  for (const auto& entry : fs::directory_iterator(out, ec)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && fs::exists(entry.path() / kStateFile, ec)) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

nlohmann::json state_json(const CheckpointState& s) {
  return {{"format", kFormat},
          {"step", s.step},
          {"adamw_steps", s.adamw_steps},
          {"lr_schedule_position", s.step},
          {"tp_size", s.tp_size},
          {"dp_size", s.dp_size},
          {"data", {{"positions", s.data_positions}, {"batch", s.batch}, {"seq", s.seq}, {"grad_accum", s.grad_accum}}},
          {"rng", {{"seed", s.seed},
                   {"note", "Philox keyed by (seed, parameter name): only initialisation draws random numbers"}}},
          {"model", s.model.to_hf_json()},
          {"options", s.options}};
}

// Renames a checkpoint out of the step_ namespace before deleting it, so a deletion killed halfway
// leaves a .tmp.* leftover (removed at the next start) and never a partial step_ directory.
void remove_checkpoint_dir(const fs::path& dir) {
  const fs::path doomed = dir.parent_path() / (".tmp." + dir.filename().string() + ".old");
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(dir, doomed);
  fs::remove_all(doomed);
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::vector<io::ParameterTensors> adamw_moments(AdamW& optimizer) {
  return {{".exp_avg", [&optimizer](size_t i) { return optimizer.exp_avg(i).f32(); }},
          {".exp_avg_sq", [&optimizer](size_t i) { return optimizer.exp_avg_sq(i).f32(); }}};
}

std::string save_checkpoint(ProcessGroup& world, ProcessGroup& tp, ProcessGroup& dp, TransformerLM& model,
                            const std::vector<io::ParameterTensors>& moments, const CheckpointState& state,
                            const std::string& out, int keep, ProcessGroup* model_parallel) {
  const std::string name = checkpoint_dir_name(state.step);
  const fs::path final_dir = fs::path(out) / name, tmp = fs::path(out) / (".tmp." + name);
  std::string error;
  if (world.rank() == 0) {
    try {
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  bool started = false;  // every rank knows whether the temporary directory exists
  try {
    world.agree<IoError>(error);
    started = true;
    if (dp.rank() == 0) {  // one replica of the model writes; its TP ranks each write their slices
      io::write_hf_files(tp, model, tmp.string(), model_parallel);
      // pipeline stages: each writes its own parameters' moments (a tied embedding's two copies have
      // bit-identical moments, so the last stage writing them again changes no byte)
      io::save_parameter_tensors(tp, model.config(), model.parameters(), moments, (tmp / kOptimizerFile).string(),
                                 {}, model_parallel);
    }
  } catch (const Error& e) {
    error = e.what();
  }
  if (world.rank() == 0 && started && error.empty()) {
    try {
      nlohmann::json j = state_json(state);
      for (const std::string& file : kFiles) {
        const io::FileDigest d = io::digest_file((tmp / file).string());
        j["files"][file] = {{"size", d.size}, {"crc32c", fmt::format("{:08x}", d.crc32c)}};
      }
      io::write_file_atomically((tmp / kStateFile).string(), j.dump(2) + "\n");
      io::fsync_dir(tmp.string());
      if (fs::exists(final_dir)) remove_checkpoint_dir(final_dir);  // the same step saved again
      fs::rename(tmp, final_dir);
      io::fsync_dir(out);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  try {
    world.agree<IoError>(error);
  } catch (const IoError& e) {
    if (world.rank() == 0) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    throw IoError(fmt::format("cannot save checkpoint {}: {}; free space or choose another --out (earlier "
                              "checkpoints are untouched)",
                              final_dir.string(), e.what()));
  }
  if (world.rank() == 0 && keep > 0) {
    const auto all = checkpoints(out);
    for (size_t i = 0; i + size_t(keep) < all.size(); ++i) {
      try {
        remove_checkpoint_dir(all[i].second);
      } catch (const std::exception& e) {  // an old checkpoint we cannot delete is not worth failing the run
        std::fprintf(stderr, "tensorpar: warning: cannot remove old checkpoint %s: %s\n", all[i].second.c_str(),
                     e.what());
      }
    }
    try {
      io::fsync_dir(out);
    } catch (const std::exception&) {  // only the removals could be lost; the new checkpoint is durable
    }
  }
  return final_dir.string();
}

CheckpointState read_checkpoint_state(const std::string& dir, bool verify) {
  const std::string path = (fs::path(dir) / kStateFile).string();
  std::ifstream in(path);
  TP_CHECK(in.good(), IoError,
           "{}: cannot open; --resume needs a checkpoint directory (OUT/step_XXXXXXXX) written by train --save-every",
           path);
  nlohmann::json j;
  CheckpointState s;
  try {
    j = nlohmann::json::parse(in);
    TP_CHECK(j.value("format", "") == kFormat, IoError, "{}: not a {} trainer state", path, kFormat);
    s.step = j.at("step");
    s.adamw_steps = j.at("adamw_steps");
    s.tp_size = j.at("tp_size");
    s.dp_size = j.at("dp_size");
    const auto& data = j.at("data");
    s.data_positions = data.at("positions").get<std::vector<int64_t>>();
    s.batch = data.at("batch");
    s.seq = data.at("seq");
    s.grad_accum = data.at("grad_accum");
    s.seed = j.at("rng").at("seed");
    s.model = ModelConfig::from_hf_json(j.at("model"), path);
    s.options = j.at("options");
    TP_CHECK(s.step >= 0 && s.adamw_steps >= 0 && s.adamw_steps <= s.step && s.dp_size >= 1 &&
                 int64_t(s.data_positions.size()) == s.dp_size,
             IoError, "{}: inconsistent trainer state (step {}, adamw_steps {}, {} data positions for {} DP ranks)", path,
             s.step, s.adamw_steps, s.data_positions.size(), s.dp_size);
    if (verify)
      for (const std::string& file : kFiles) {
        const auto& f = j.at("files").at(file);
        const io::FileDigest d = io::digest_file((fs::path(dir) / file).string());
        const std::string crc = fmt::format("{:08x}", d.crc32c);
        TP_CHECK(d.size == f.at("size").get<uint64_t>() && crc == f.at("crc32c").get<std::string>(), IoError,
                 "{}/{}: checksum mismatch ({} bytes, crc32c {}; the checkpoint recorded {} bytes, crc32c {}): the "
                 "file is damaged; resume from an older checkpoint",
                 dir, file, d.size, crc, f.at("size").get<uint64_t>(), f.at("crc32c").get<std::string>());
      }
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: malformed trainer state ({})", path, e.what()));
  }
  return s;
}

void load_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::vector<io::ParameterTensors>& moments,
                     const std::string& dir) {
  io::load_hf_checkpoint(tp, model, dir);
  io::load_parameter_tensors(tp, model.config(), model.parameters(), moments,
                             (fs::path(dir) / kOptimizerFile).string());
}

std::string latest_checkpoint(const std::string& out) {
  const auto all = checkpoints(out);
  return all.empty() ? std::string() : all.back().second.string();
}

void remove_checkpoint_temporaries(const std::string& out) {
  std::error_code ec;
  if (!fs::is_directory(out, ec)) return;
  for (const auto& entry : fs::directory_iterator(out, ec))
    if (entry.path().filename().string().rfind(".tmp.", 0) == 0) fs::remove_all(entry.path(), ec);
  io::remove_stale_save_files(out);
}

}  // namespace tensorpar
