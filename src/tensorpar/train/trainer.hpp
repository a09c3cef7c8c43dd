// The training loop: data → model → loss → backward → (data-parallel gradient average) →
// global-norm clipping → AdamW, with a live progress line, JSON-lines metrics, periodic validation
// and a Hugging Face checkpoint at the end. Collective over the world.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"
#include "tensorpar/train/lr_schedule.hpp"

namespace tensorpar {

struct TrainOptions {
  std::string data;           // llm.c token file or plain text (bytes)
  std::string init;           // Hugging Face model directory to start from ("" = fresh init)
  std::string out;            // where to save model.safetensors + config.json ("" = don't save)
  std::string metrics;        // JSON lines file ("" = none)
  ModelConfig model;          // ignored (taken from init) when init is set; vocab from the data if 0
  int tp = 0;                 // tensor-parallel degree (0 = all ranks)
  int64_t batch = 4, seq = 64, steps = 100, grad_accum = 1;
  LrSchedule schedule;        // lr, warmup, kind; total_steps set from steps
  AdamWConfig adamw;
  float grad_clip = 1.0f;     // 0 disables
  uint64_t seed = 1337;
  double val_fraction = 0.1;  // tail of the data held out
  int64_t val_every = 0;      // steps between validations (0: only at the end)
  int64_t val_batches = 4;
  bool progress = true;       // live progress line on rank 0 (stderr)
  TransformerOptions compute;  // precision, sequence parallelism, recomputation
};

struct StepRecord {
  float loss = 0;
  double grad_norm = 0;  // before clipping
  float lr = 0;
};

struct TrainResult {
  std::vector<StepRecord> history;  // one record per step
  float loss = 0;      // last step's training loss
  float val_loss = -1;  // last validation loss (-1 if none)
  double grad_norm = 0;
  double tokens_per_s = 0;  // over all steps but the first (warm-up)
  int64_t steps = 0;
  int64_t parameters = 0;
};

TrainResult train(ProcessGroup& world, const TrainOptions& options);

}  // namespace tensorpar
