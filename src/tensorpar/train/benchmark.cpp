#include "tensorpar/train/benchmark.hpp"

#include <sys/resource.h>

#include <chrono>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/core/rng.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/kernels/peak_flops.hpp"
#include "tensorpar/model/memory.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"
#include "tensorpar/train/grad_norm.hpp"
#include "tensorpar/train/pipeline.hpp"

namespace tensorpar {

BenchPreset bench_preset(const std::string& name) {
  BenchPreset p;
  p.model.family = ModelFamily::Gpt2;
  if (name == "gpt-bench") {
    p.model.vocab_size = 256;
    p.model.layers = 4;
    p.model.hidden = 768;
    p.model.heads = 12;
    p.model.max_seq = p.seq = 256;
    p.batch = 8;
  } else if (name == "gpt2-small") {
    p.model.vocab_size = 50304;
    p.model.layers = 12;
    p.model.hidden = 768;
    p.model.heads = 12;
    p.model.max_seq = p.seq = 1024;
    p.batch = 4;
  } else {
    throw ConfigError(fmt::format("unknown preset '{}'; use gpt-bench or gpt2-small", name));
  }
  return p;
}

BenchResult run_benchmark(ProcessGroup& world, const BenchOptions& o) {
  BenchPreset preset = bench_preset(o.preset);
  TP_CHECK(o.seq >= 0 && o.hidden >= 0, ConfigError, "--seq and --hidden must be positive (got {} and {})", o.seq,
           o.hidden);
  if (o.seq > 0) {
    const int64_t tokens = preset.batch * preset.seq;
    TP_CHECK(o.batch > 0 || tokens % o.seq == 0, ConfigError,
             "--seq {} does not divide the preset's {} tokens per step; pick a divisor or give --batch", o.seq, tokens);
    preset.batch = tokens / o.seq;
    preset.seq = preset.model.max_seq = o.seq;
  }
  if (o.hidden > 0) {
    TP_CHECK(o.hidden % 64 == 0, ConfigError, "--hidden {} must be a multiple of 64 (64 per attention head)", o.hidden);
    preset.model.hidden = o.hidden;
    preset.model.heads = o.hidden / 64;
  }
  if (o.batch > 0) preset.batch = o.batch;
  TP_CHECK(o.steps >= 1 && o.warmup_steps >= 0, ConfigError, "--steps must be >= 1 and --warmup >= 0");
  TP_CHECK(o.batch >= 0, ConfigError, "--batch must be positive (got {}; 0 or absent: the preset's)", o.batch);
  TP_CHECK(o.tp >= 0, ConfigError, "--tp must be positive (got {})", o.tp);
  TP_CHECK(o.pp >= 1 && o.micro_batches >= 1, ConfigError, "--pp ({}) and --micro-batches ({}) must be at least 1",
           o.pp, o.micro_batches);
  Mesh mesh(world, o.tp > 0 ? o.tp : world.size() / o.pp, o.pp);
  ProcessGroup &tp = mesh.tp(), &dp = mesh.dp();
  const std::vector<int> first_layer = split_layers(int(preset.model.layers), o.pp);
  const int stage = mesh.pp().rank();
  const LayerRange layers{first_layer[size_t(stage)], first_layer[size_t(stage) + 1] - first_layer[size_t(stage)]};
  tp.set_async_mode(o.async_mode);

  // the peak of one core of this machine, measured while every rank measures at once
  world.barrier();
  const PeakFlops peak = measure_peak_flops();
  double peak_sum = peak.f32_per_core;
  world.all_reduce(std::span<double>(&peak_sum, 1));

  const int64_t B = preset.batch, T = preset.seq;
  TransformerLM model(tp, preset.model, B, T, o.seed, o.compute, layers);
  AdamW optimizer(model.parameters(), {});
  std::unique_ptr<PipelineStage> pipeline;
  if (o.pp > 1) pipeline = std::make_unique<PipelineStage>(mesh.pp(), model, o.pp_schedule, int(o.micro_batches));
  double pp_wait = 0, pp_busy = 0;
  // synthetic tokens, the same on every TP rank, different per data-parallel rank
  std::vector<int32_t> x(size_t(B * T)), y(x.size());
  const PhiloxKey key = philox_key(o.seed + uint64_t(dp.rank()), "bench tokens");
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = int32_t(philox_uniform(key, 2 * i) * float(preset.model.vocab_size));
    y[i] = int32_t(philox_uniform(key, 2 * i + 1) * float(preset.model.vocab_size));
  }
  auto step = [&] {
    model.zero_grad();
    float loss = 0;
    if (pipeline) {  // the same synthetic micro-batch m times
      const auto same = [&](int32_t* a, int32_t* b) {
        std::copy(x.begin(), x.end(), a);
        std::copy(y.begin(), y.end(), b);
      };
      loss = float(pipeline->step(same));
      pp_wait += pipeline->wait_seconds();
      pp_busy += pipeline->step_seconds();
    } else {
      for (int64_t k = 0; k < o.micro_batches; ++k) {
        loss = model.forward(x.data(), y.data(), B, T);
        model.backward(x.data(), y.data(), B, T, 1.0f / float(o.micro_batches));
      }
    }
    if (dp.size() > 1)
      for (Parameter* p : model.parameters()) dp.all_reduce(p->grad.span());
    TP_PROFILE_SCOPE("grad norm+AdamW");
    if (pipeline) {
      pipeline->sum_tied_embedding_grad(mesh.embedding());
      clip_grad_norm(tp, mesh.pp(), model.parameters(), pipeline->counted_elsewhere(), 1.0);
    } else {
      clip_grad_norm(tp, model.parameters(), 1.0);
    }
    optimizer.step(1e-4f);
    return loss;
  };
  for (int64_t i = 0; i < o.warmup_steps; ++i) step();
  pp_wait = pp_busy = 0;
  world.barrier();
  tp.reset_stats();
  dp.reset_stats();
  mesh.pp().reset_stats();
  set_profiling(o.profile);
  reset_profile();
  const auto t0 = std::chrono::steady_clock::now();
  float loss = 0;
  for (int64_t i = 0; i < o.steps; ++i) loss = step();
  set_profiling(false);
  world.barrier();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  BenchResult r;
  r.tp = tp.size();
  r.dp = dp.size();
  r.pp = mesh.pp_size();
  if (pipeline) {
    double bubble = pp_busy > 0 ? pp_wait / pp_busy : 0;
    world.all_reduce(std::span<double>(&bubble, 1));
    r.pp_bubble = bubble / world.size();
    r.pp_bubble_ideal = ideal_bubble_fraction(r.pp, int(o.micro_batches));
  }
  r.threads_per_rank = num_threads();
  r.parameters = preset.model.parameter_count();
  r.seq = T;
  r.batch = B;
  r.hidden = preset.model.hidden;
  r.loss = loss;
  r.step_seconds = seconds / double(o.steps);
  r.tokens_per_s = double(B * T * o.micro_batches * dp.size()) / r.step_seconds;
  const ModelConfig& c = preset.model;
  r.model_gflops_per_token = (6.0 * double(r.parameters) + 12.0 * double(c.layers * T * c.hidden)) * 1e-9;
  r.achieved_gflops = r.tokens_per_s * r.model_gflops_per_token;
  r.peak_gflops_per_core = peak_sum / world.size();
  // MFU against the peak of the arithmetic the GEMMs use: bf16 dot products in bf16 mode
  if (o.compute.precision == Precision::BF16) {
    double bf16_sum = peak.bf16_per_core;
    world.all_reduce(std::span<double>(&bf16_sum, 1));
    r.peak_bf16_gflops = bf16_sum * r.threads_per_rank;
    r.bf16_native = gemm_bf16_native() && r.peak_bf16_gflops > 0;
  }
  r.peak_gflops = peak_sum * r.threads_per_rank;
  r.mfu = r.achieved_gflops / r.peak_gflops;
  if (r.peak_bf16_gflops > 0) r.mfu_bf16 = r.achieved_gflops / r.peak_bf16_gflops;
  // pipeline stages waiting for each other count as communication too
  double comm[2] = {(tp.stats().seconds + dp.stats().seconds + mesh.pp().stats().seconds) / seconds, 0};
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  comm[1] = double(usage.ru_maxrss) / 1024.0;  // kB -> MB
  double sum_comm = comm[0], max_rss = comm[1];
  world.all_reduce(std::span<double>(&sum_comm, 1));
  world.all_reduce(std::span<double>(&max_rss, 1), {ReduceOp::Max});
  r.comm_fraction = sum_comm / world.size();
  r.peak_rss_mb = max_rss;
  const MemoryShape shape{preset.model, B, T, tp.size(), o.compute};
  r.activation_bytes_per_layer = model.activation_bytes_per_layer();
  r.activation_bytes_per_layer_formula = activation_bytes_per_layer_formula(shape);
  r.activation_bytes_per_layer_korthikanti = korthikanti_activation_bytes_per_layer(shape);
  r.activation_bytes = model.activation_bytes();
  r.parameter_bytes_per_rank = parameter_bytes_per_rank(model.parameters());
  r.parameter_bytes_expected = parameter_bytes_expected(model.parameters(), tp.size());
  return r;
}

}  // namespace tensorpar
