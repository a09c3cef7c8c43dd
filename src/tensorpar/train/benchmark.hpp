// Training-throughput benchmark: warm-up then timed steps of a preset model on synthetic tokens,
// reported against this machine's peak measured at start (tokens/s, model GFLOP/s, MFU), with the
// share of step time spent blocked in communication and the peak resident memory per rank.
#pragma once
#include <cstdint>
#include <string>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/pipeline_schedule.hpp"

namespace tensorpar {

struct BenchOptions {
  std::string preset = "gpt-bench";
  int tp = 0;  // 0: all ranks (over --pp)
  // Pipeline stages (train/pipeline.hpp) and micro-batches per step (each `batch` sequences).
  int pp = 1;
  int64_t micro_batches = 1;
  PipelineSchedule pp_schedule = PipelineSchedule::OneFOneB;
  int64_t warmup_steps = 2, steps = 5;
  int64_t batch = 0;  // 0: the preset's
  // Scaling sweeps (docs/performance.md): 0 keeps the preset's. seq also sets the model's positions;
  // without an explicit batch, the batch becomes (preset tokens per step) / seq, so the tokens per
  // step stay fixed. hidden keeps 64 per head and the preset's 4x MLP.
  int64_t seq = 0, hidden = 0;
  uint64_t seed = 1;
  bool profile = false;
  TransformerOptions compute;  // precision, sequence parallelism, recomputation
  AsyncMode async_mode = AsyncMode::Deferred;  // how the backward's dX all-reduce meets the dW GEMM  // collect the per-phase time table (core/profile.hpp) over the timed steps
};

struct BenchPreset {
  ModelConfig model;
  int64_t seq = 0, batch = 0;
};
// "gpt-bench": 4 layers, hidden 768, 12 heads, seq 256, batch 8, byte vocabulary;
// "gpt2-small": 12/768/12, seq 1024, vocab 50304, batch 4. ConfigError for other names.
BenchPreset bench_preset(const std::string& name);

struct BenchResult {
  int tp = 1, dp = 1, pp = 1, threads_per_rank = 1;
  // pipeline: share of step time the stages waited for each other (mean over ranks), and the ideal
  // (P - 1) / (m + P - 1) of equal stages
  double pp_bubble = 0, pp_bubble_ideal = 0;
  int64_t parameters = 0;
  int64_t seq = 0, batch = 0, hidden = 0;  // of the model run (preset or overridden)
  double tokens_per_s = 0;
  double step_seconds = 0;
  double model_gflops_per_token = 0;  // 6 * params + 12 * layers * seq * hidden, in GFLOP
  double achieved_gflops = 0;         // whole job
  double peak_gflops = 0;             // whole job: measured per-core peak x cores in use
  double peak_gflops_per_core = 0;
  double mfu = 0;               // against the f32 FMA peak
  double peak_bf16_gflops = 0;  // bf16 runs: whole job, measured vdpbf16ps peak
  double mfu_bf16 = 0;          // bf16 runs: against the bf16 peak
  // bf16 runs: false where the CPU has no bf16 dot product (AVX2 only): the bf16 GEMMs then run widened
  // to f32 (gemm_bf16_native), peak_bf16_gflops and mfu_bf16 stay 0, and mfu is the only measure
  bool bf16_native = false;
  double comm_fraction = 0;           // mean over ranks of (time blocked in collectives / step time)
  double peak_rss_mb = 0;             // max over ranks
  // memory per rank (docs/memory.md), measured on rank 0 beside the formulas for the same mode
  int64_t activation_bytes_per_layer = 0;          // held from forward to backward, per layer
  double activation_bytes_per_layer_formula = 0;   // ours
  double activation_bytes_per_layer_korthikanti = 0;  // Korthikanti et al., scaled to f32 activations
  int64_t activation_bytes = 0;                    // whole model, LM head included
  int64_t parameter_bytes_per_rank = 0;            // values + grads + AdamW m, v
  double parameter_bytes_expected = 0;             // replicated + 1/t of the sharded parameters
  float loss = 0;
};

BenchResult run_benchmark(ProcessGroup& world, const BenchOptions& options);

}  // namespace tensorpar
