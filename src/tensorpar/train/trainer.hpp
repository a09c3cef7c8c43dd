// The training loop: data → model → loss → backward → (data-parallel gradient average) →
// global-norm clipping → AdamW, with a live progress line, JSON-lines metrics, periodic validation
// a Hugging Face model at the end, periodic training checkpoints (train/checkpoint.hpp) and resume
// from them, a clean stop on request (SIGTERM) and a policy for non-finite steps. Collective over the world.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"
#include "tensorpar/train/lr_schedule.hpp"
#include "tensorpar/train/pipeline_schedule.hpp"

namespace tensorpar {

struct TrainOptions {
  std::string data;           // llm.c token file or plain text (bytes)
  std::string init;           // Hugging Face model directory to start from ("" = fresh init)
  std::string out;            // where to save model.safetensors + config.json and checkpoints ("" = don't save)
  std::string resume;         // a checkpoint directory (OUT/step_*), "auto" (newest under out, or fresh), "" = none
  int64_t save_every = 0;     // a checkpoint every N steps and at the end (0: none); needs out
  int keep = 0;               // keep the newest K checkpoints (0: all)
  enum class OnNan { Abort, Skip } on_nan = OnNan::Abort;  // a step whose loss or gradient norm is not finite
  int64_t max_nan_skips = 5;  // with Skip: abort after this many such steps in a row
  // Polled after every step (the ranks agree on the maximum): non-zero (a signal number) finishes
  // the step, writes a checkpoint when out is set and returns with TrainResult::stop_signal set.
  std::function<int()> stop_signal;
  // Model flags the user gave explicitly ("layers", "hidden", "heads", "kv-heads", "ffn", "vocab",
  // "family"): on resume each must match the checkpoint's model, which otherwise decides the shape.
  std::vector<std::string> given_model_flags;
  int64_t inject_nan_at_step = 0;  // testing only: a NaN gradient at this 1-based step
  std::string metrics;        // JSON lines file ("" = none)
  ModelConfig model;          // ignored (taken from init) when init is set; vocab from the data if 0
  int tp = 0;                 // tensor-parallel degree (0 = all ranks)
  // Pipeline stages (train/pipeline.hpp): the world is tp x pp x dp ranks; grad_accum is the number
  // of micro-batches each step pushes through the pipeline.
  int pp = 1;
  PipelineSchedule pp_schedule = PipelineSchedule::OneFOneB;
  int64_t batch = 4, seq = 64, steps = 100, grad_accum = 1;
  LrSchedule schedule;        // lr, warmup, kind; total_steps set from steps
  AdamWConfig adamw;
  float grad_clip = 1.0f;     // 0 disables
  // Data-parallel gradient average: buckets of this many MB of the gradient arena, each all-reduced
  // as soon as backward has finished its gradients (train/grad_buckets.hpp); 0: parameter by
  // parameter after the whole backward (the old path, kept as the reference).
  double dp_bucket_mb = 25;
  AsyncMode dp_async = AsyncMode::Nonblocking;  // how the bucket all-reduces run (comm/process_group.hpp)
  // 1: ZeRO-1, AdamW's state sharded over the DP group (train/zero_optimizer.hpp): the same buckets
  // reduce-scattered instead of all-reduced, the weights all-gathered after the update. 0: off.
  // With DP=1 there is nothing to shard: a no-op.
  int zero = 0;
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
  int64_t steps = 0;       // steps run by this call
  int64_t first_step = 0;  // 0-based step it started at (> 0 after a resume)
  int64_t parameters = 0;
  int64_t dp_buckets = 0;       // gradient buckets per step (0: per-parameter all-reduce, or DP=1)
  int64_t optimizer_bytes = 0;  // AdamW state on this rank (ZeRO-1: about 1/DP of it)
  int pp_max_in_flight = 0;     // pipeline: micro-batches this rank's stage held at once in the last step
  // pipeline: share of the step time the stages spent waiting for each other (mean over ranks, steps
  // but the first), and (P - 1) / (m + P - 1), the ideal of equal stages
  double pp_bubble = 0, pp_bubble_ideal = 0;
  int64_t skipped_steps = 0;    // non-finite steps whose update was dropped (--on-nan skip)
  int stop_signal = 0;          // the signal that stopped training early (0: ran to the end)
  std::string resumed_from;     // checkpoint directory ("" for a fresh start)
  std::string last_checkpoint;  // the newest checkpoint written ("" if none)
};

// The run's options as JSON (recorded in checkpoints).
nlohmann::json train_options_json(const TrainOptions& options, int tp_size, int dp_size);

TrainResult train(ProcessGroup& world, const TrainOptions& options);

}  // namespace tensorpar
