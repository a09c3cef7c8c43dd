// Training checkpoints through train() and the checkpoint API: stopping at step N (as SIGTERM
// does) and resuming equals an uninterrupted run bit for bit at the same degree (losses, weights,
// AdamW moments: the checkpoint files are byte-identical), and to 1e-5 at TP=1; AdamW's moments
// reshard between TP degrees (GPT-2's transposed Conv1D, Llama's GQA heads replicated at 4 ranks);
// a damaged file fails its checksum; a conflicting model flag is refused; a non-finite step aborts
// with its number or is skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "temp_dir.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "tensorpar/train/checkpoint.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;

using testing::write_corpus;

TrainOptions options(const std::string& data) {
  TrainOptions o;
  o.data = data;
  o.model.vocab_size = 0;
  o.model.layers = 2;
  o.model.hidden = 24;
  o.model.heads = 4;
  o.seq = 16;
  o.batch = 4;
  o.steps = 8;
  o.schedule.lr = 3e-3f;
  o.schedule.warmup_steps = 2;
  o.grad_clip = 0.5f;
  o.val_fraction = 0.1;
  o.progress = false;
  return o;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A stop request after `n` steps, as the CLI's SIGTERM handler makes one.
std::function<int()> stop_after(int n) {
  auto calls = std::make_shared<int>(0);
  return [calls, n] { return ++*calls >= n ? 15 : 0; };
}

void expect_bit_identical_resume(ProcessGroup& world, int tp) {
  testing::SharedTempDir dir(world);
  TrainOptions full = options(write_corpus(world, dir));
  full.tp = tp;
  full.out = dir.path("full");
  full.save_every = 8;
  const TrainResult a = train(world, full);

  TrainOptions stopped = full;
  stopped.out = dir.path("resumed");
  stopped.save_every = 0;
  stopped.stop_signal = stop_after(4);
  const TrainResult b = train(world, stopped);
  EXPECT_EQ(b.stop_signal, 15);
  ASSERT_EQ(b.history.size(), 4u);
  const std::string ckpt = dir.path("resumed/" + checkpoint_dir_name(4));
  EXPECT_EQ(b.last_checkpoint, ckpt);

  TrainOptions resumed = stopped;
  resumed.stop_signal = nullptr;
  resumed.save_every = 8;
  resumed.resume = "auto";
  const TrainResult c = train(world, resumed);
  EXPECT_EQ(c.resumed_from, ckpt);
  EXPECT_EQ(c.first_step, 4);
  ASSERT_EQ(c.history.size(), 4u);
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(b.history[s].loss, a.history[s].loss) << "step " << s + 1;
    EXPECT_EQ(c.history[s].loss, a.history[s + 4].loss) << "step " << s + 5;
    EXPECT_EQ(c.history[s].grad_norm, a.history[s + 4].grad_norm) << "step " << s + 5;
  }
  EXPECT_EQ(c.val_loss, a.val_loss);
  if (world.rank() == 0)
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      const std::string x = slurp(dir.path("full/step_00000008/") + file);
      const std::string y = slurp(dir.path("resumed/step_00000008/") + file);
      EXPECT_FALSE(x.empty());
      EXPECT_TRUE(x == y) << file << " differs between the uninterrupted and the resumed run";
    }
  world.barrier();
}

TEST(Checkpoint, StopAndResumeIsBitIdenticalAtTheWorldsTpDegree) {
  ProcessGroup world = ProcessGroup::world();
  expect_bit_identical_resume(world, 0);
}

TEST(Checkpoint, StopAndResumeIsBitIdenticalWithDataParallelism) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() == 1) return;  // covered above
  expect_bit_identical_resume(world, world.size() >= 4 ? 2 : 1);  // DP=2 (TP=2 x DP=2 at 4 ranks)
}

TEST(Checkpoint, ResumeAtTpOneContinuesTheSameLosses) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir));
  const TrainResult serial = train(self, o);  // uninterrupted, TP=1
  o.out = dir.path("out");
  o.stop_signal = stop_after(4);
  train(world, o);  // stopped at step 4 at the world's degree
  TrainOptions resumed = options(o.data);
  resumed.resume = dir.path("out/" + checkpoint_dir_name(4));
  const TrainResult r = train(self, resumed);
  ASSERT_EQ(r.history.size(), 4u);
  for (size_t s = 0; s < 4; ++s)
    EXPECT_NEAR(r.history[s].loss, serial.history[s + 4].loss, 1e-5 * serial.history[s + 4].loss) << "step " << s + 5;
}

TEST(Checkpoint, ResumeAtAnotherDpDegreeWithTheSameGlobalBatchContinuesTheSameLosses) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  if (world.size() == 1) return;  // no other DP degree
  testing::SharedTempDir dir(world);
  const TrainOptions serial_options = options(write_corpus(world, dir));  // batch 4 on one rank
  const TrainResult serial = train(self, serial_options);
  TrainOptions data_parallel = serial_options;  // DP = world, the same 4 rows per step in total
  data_parallel.tp = 1;
  data_parallel.batch = 4 / world.size();
  for (const bool save_parallel : {true, false}) {
    TrainOptions first = save_parallel ? data_parallel : serial_options;
    first.out = dir.path(save_parallel ? "dp" : "serial");
    first.stop_signal = stop_after(4);
    if (save_parallel) {
      train(world, first);
    } else {
      if (world.rank() == 0) train(self, first);
      world.barrier();
    }
    TrainOptions second = save_parallel ? serial_options : data_parallel;
    second.resume = first.out + "/" + checkpoint_dir_name(4);
    const TrainResult r = save_parallel ? train(self, second) : train(world, second);
    ASSERT_EQ(r.history.size(), 4u);
    for (size_t s = 0; s < 4; ++s)
      EXPECT_NEAR(r.history[s].loss, serial.history[s + 4].loss, 1e-5 * serial.history[s + 4].loss)
          << "step " << s + 5 << (save_parallel ? ", saved at DP" : ", saved serially");
  }
}

// moment value of (parameter, global element) that survives any resharding
float moment_value(const Parameter& p, int64_t global, float which) {
  return which + float(p.name.size() % 7) + 1e-4f * float(global % 10007);
}

void fill_moments(TransformerLM& model, AdamW& opt) {
  const auto params = model.parameters();
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = *params[i];
    float* m = opt.exp_avg(i).f32();
    float* v = opt.exp_avg_sq(i).f32();
    const bool vocab_rows = p.name.find("wte") != std::string::npos || p.name.find("embed_tokens") != std::string::npos ||
                            p.name == "lm_head.weight";
    for (int64_t j = 0; j < p.value.numel(); ++j) {
      const int64_t g = p.global_index(j);
      const bool padding = vocab_rows && g / p.global_shape[1] >= vocab;  // not saved: loads as 0
      m[j] = padding ? 0.0f : moment_value(p, g, 1.0f);
      v[j] = padding ? 0.0f : moment_value(p, g, 2.0f);
    }
  }
}

int64_t count_moment_mismatches(TransformerLM& model, AdamW& opt) {
  const auto params = model.parameters();
  const int64_t vocab = model.config().vocab_size;
  int64_t bad = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = *params[i];
    const bool vocab_rows = p.name.find("wte") != std::string::npos || p.name.find("embed_tokens") != std::string::npos ||
                            p.name == "lm_head.weight";
    for (int64_t j = 0; j < p.value.numel(); ++j) {
      const int64_t g = p.global_index(j);
      const bool padding = vocab_rows && g / p.global_shape[1] >= vocab;
      bad += opt.exp_avg(i).f32()[j] != (padding ? 0.0f : moment_value(p, g, 1.0f));
      bad += opt.exp_avg_sq(i).f32()[j] != (padding ? 0.0f : moment_value(p, g, 2.0f));
    }
  }
  return bad;
}

TEST(Checkpoint, AdamWMomentsReshardBetweenTpDegrees) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  for (const ModelFamily family : {ModelFamily::Gpt2, ModelFamily::Llama}) {
    ModelConfig c;
    c.family = family;
    c.vocab_size = 301;  // padded differently at every degree
    c.max_seq = 8;
    c.hidden = 32;
    c.layers = 1;
    c.heads = 4;
    if (family == ModelFamily::Llama) {
      c.kv_heads = 2;  // replicated key/value heads at 4 ranks
      c.ffn_hidden = 40;
      c.tie_embeddings = false;
    }
    for (const bool world_saves : {true, false}) {
      ProcessGroup& saver = world_saves ? world : self;
      ProcessGroup& loader = world_saves ? self : world;
      const std::string path = dir.path(fmt::format("moments_{}_{}.safetensors", int(family), int(world_saves)));
      {
        TransformerLM model(saver, c, 1, 8, 1);
        AdamW opt(model.parameters(), {});
        fill_moments(model, opt);
        const auto params = model.parameters();
        if (world_saves || world.rank() == 0)
          io::save_parameter_tensors(saver, c, params,
                                     {{".exp_avg", [&](size_t i) { return opt.exp_avg(i).f32(); }},
                                      {".exp_avg_sq", [&](size_t i) { return opt.exp_avg_sq(i).f32(); }}},
                                     path);
      }
      world.barrier();
      TransformerLM model(loader, c, 1, 8, 1);
      AdamW opt(model.parameters(), {});
      const auto params = model.parameters();
      io::load_parameter_tensors(loader, c, params,
                                 {{".exp_avg", [&](size_t i) { return opt.exp_avg(i).f32(); }},
                                  {".exp_avg_sq", [&](size_t i) { return opt.exp_avg_sq(i).f32(); }}},
                                 path);
      EXPECT_EQ(count_moment_mismatches(model, opt), 0)
          << (family == ModelFamily::Gpt2 ? "gpt2" : "llama") << (world_saves ? " saved at world" : " saved at TP=1");
      world.barrier();
    }
  }
}

TEST(Checkpoint, DamagedFileFailsItsChecksumAndConflictingFlagsAreRefused) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir));
  o.steps = 2;
  o.out = dir.path("out");
  o.save_every = 1;
  o.keep = 1;
  train(world, o);
  const std::string ckpt = dir.path("out/" + checkpoint_dir_name(2));
  if (world.rank() == 0) {
    EXPECT_FALSE(fs::exists(dir.path("out/" + checkpoint_dir_name(1)))) << "--keep 1 keeps only the newest";
    EXPECT_NO_THROW(read_checkpoint_state(ckpt, true));
  }

  TrainOptions conflict = o;
  conflict.resume = ckpt;
  conflict.steps = 4;
  conflict.model.layers = 3;
  conflict.given_model_flags = {"layers"};
  try {
    train(world, conflict);
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--layers 3 (checkpoint: 2)"), std::string::npos) << e.what();
  }
  conflict.given_model_flags = {};  // not given: the checkpoint's 2 layers are used
  conflict.save_every = 0;          // (so --keep 1 does not remove the checkpoint used below)
  EXPECT_NO_THROW(train(world, conflict));

  world.barrier();
  if (world.rank() == 0) {  // flip one byte of the optimizer state
    std::fstream f(ckpt + "/optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  world.barrier();
  TrainOptions damaged = o;
  damaged.resume = ckpt;
  damaged.steps = 4;
  try {
    train(world, damaged);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, NonFiniteStepAbortsWithItsNumberOrIsSkipped) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir));
  o.steps = 5;
  o.inject_nan_at_step = 3;
  try {
    train(world, o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 3: the loss is"), std::string::npos) << e.what();
  }
  o.on_nan = TrainOptions::OnNan::Skip;
  TrainOptions clean = o;
  clean.inject_nan_at_step = 0;
  const TrainResult skipped = train(world, o), reference = train(world, clean);
  EXPECT_EQ(skipped.skipped_steps, 1);
  ASSERT_EQ(skipped.history.size(), 5u);
  EXPECT_TRUE(std::isnan(skipped.history[2].grad_norm));
  EXPECT_EQ(skipped.history[1].loss, reference.history[1].loss);
  EXPECT_TRUE(std::isfinite(skipped.history[4].loss));
  o.max_nan_skips = 0;
  try {
    train(world, o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--max-nan-skips 0"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, FinalSaveReplacesAShardedCheckpointAndLeavesNoTemporaries) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  const std::string out = dir.path("model");
  if (world.rank() == 0) {  // an old sharded checkpoint and a killed save's leftovers
    fs::create_directories(out);
    std::ofstream(out + "/model.safetensors.index.json")
        << R"({"weight_map": {"wte.weight": "model-00001-of-00001.safetensors"}})";
    std::ofstream(out + "/model-00001-of-00001.safetensors") << "old";
    std::ofstream(out + "/model.safetensors.tmp.999999999") << "partial";
    fs::create_directories(out + "/.tmp.save.999999999");
  }
  world.barrier();
  TrainOptions o = options(write_corpus(world, dir));
  o.steps = 2;
  o.out = out;
  const TrainResult r = train(world, o);
  if (world.rank() == 0) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors"}));
  }
  // the saved model loads and its config.json is checked against the weights
  ModelConfig c = io::read_model_config(out);
  TransformerLM model(world, c, 1, 8, 99);
  EXPECT_NO_THROW(io::load_hf_checkpoint(world, model, out));
  world.barrier();
  if (world.rank() == 0) {  // a config.json from another save beside these weights
    c.norm_eps = 1e-3f;
    std::ofstream(out + "/config.json") << c.to_hf_json().dump(2) << "\n";
  }
  world.barrier();
  try {
    io::load_hf_checkpoint(world, model, out);
    ADD_FAILURE() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("different saves"), std::string::npos) << e.what();
  }
  (void)r;
}

}  // namespace
}  // namespace tensorpar
