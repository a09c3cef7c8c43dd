#include "tensorpar/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>

#include <unistd.h>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/metrics.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/checkpoint.hpp"
#include "tensorpar/train/data_loader.hpp"
#include "tensorpar/train/grad_buckets.hpp"
#include "tensorpar/train/grad_norm.hpp"
#include "tensorpar/train/options_check.hpp"
#include "tensorpar/train/pipeline.hpp"
#include "tensorpar/train/zero_optimizer.hpp"

namespace tensorpar {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const int s = int(std::lround(std::max(0.0, seconds)));
  return s >= 60 ? fmt::format("{}m{:02d}s", s / 60, s % 60) : fmt::format("{}s", s);
}

// Every rank maps the file(s) (only headers are read); a failure anywhere becomes the same error everywhere.
io::TokenDataset load_data(ProcessGroup& world, const std::string& path) {
  io::TokenDataset data;
  std::string error;
  try {
    data = io::TokenDataset::open(path);
  } catch (const Error& e) {
    error = e.what();
  }
  world.agree<IoError>(error);
  return data;
}

float mean_validation_loss(TransformerLM& model, PipelineStage* pipeline, DataLoader& loader, int64_t batches,
                           int64_t B, int64_t T, std::vector<int32_t>& x, std::vector<int32_t>& y, ProcessGroup& dp) {
  loader.reset();
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    loader.next(x.data(), y.data());
    sum += pipeline ? pipeline->forward_loss(x.data(), y.data()) : model.forward(x.data(), y.data(), B, T);
  }
  dp.all_reduce(std::span<double>(&sum, 1));
  return float(sum / double(batches * dp.size()));
}

// Rank 0 prepares --out before any work: creates it, proves it is writable, and removes what
// killed runs left there (temporary checkpoints and saves). The same error on every rank.
void prepare_out(ProcessGroup& world, const std::string& out) {
  std::string error;
  if (world.rank() == 0) {
    try {
      std::filesystem::create_directories(out);
      remove_checkpoint_temporaries(out);
      io::write_file_atomically((std::filesystem::path(out) / ".tmp.probe").string(), "");
      std::filesystem::remove(std::filesystem::path(out) / ".tmp.probe");
    } catch (const std::exception& e) {
      error = fmt::format("--out {} is not a writable directory: {}", out, e.what());
    }
  }
  world.agree<IoError>(error);
}

// The checkpoint decides the model; flags the user gave must agree with it (before anything is built).
void check_resume_config(const ModelConfig& c, const TrainOptions& o, const std::string& dir) {
  std::vector<std::string> conflicts;
  const auto given = [&](const char* flag) {
    return std::find(o.given_model_flags.begin(), o.given_model_flags.end(), flag) != o.given_model_flags.end();
  };
  const auto check = [&](const char* flag, int64_t flag_value, int64_t checkpoint_value) {
    if (given(flag) && flag_value != checkpoint_value)
      conflicts.push_back(fmt::format("--{} {} (checkpoint: {})", flag, flag_value, checkpoint_value));
  };
  check("layers", o.model.layers, c.layers);
  check("hidden", o.model.hidden, c.hidden);
  check("heads", o.model.heads, c.heads);
  check("kv-heads", o.model.kv_heads, c.kv_heads);
  check("ffn", o.model.ffn_hidden, c.ffn_hidden);
  check("vocab", o.model.vocab_size, c.vocab_size);
  if (given("family") && o.model.family != c.family)
    conflicts.push_back(fmt::format("--family {} (checkpoint: {})", o.model.family == ModelFamily::Llama ? "llama" : "gpt2",
                                    c.family == ModelFamily::Llama ? "llama" : "gpt2"));
  if (!conflicts.empty()) {
    std::string list;
    for (const auto& s : conflicts) list += (list.empty() ? "" : ", ") + s;
    throw ConfigError(fmt::format("cannot resume from {}: {} conflict with the checkpoint's model; drop these flags "
                                  "(a resumed run takes its model from the checkpoint) or start a new run",
                                  dir, list));
  }
}

// This rank's pipeline stage: the layers split contiguously (train/pipeline_schedule.hpp), printed on rank 0.
LayerRange pipeline_stage_layers(ProcessGroup& world, Mesh& mesh, const ModelConfig& config, bool print) {
  if (mesh.pp_size() == 1) return {};
  const std::vector<int> first = split_layers(int(config.layers), mesh.pp_size());
  if (print && world.rank() == 0) {
    std::string split;
    for (int s = 0; s < mesh.pp_size(); ++s)
      split += fmt::format("{}stage {}: layers {}-{}{}{}", s ? ", " : "", s, first[size_t(s)], first[size_t(s) + 1] - 1,
                           s == 0 ? " + embedding" : "", s + 1 == mesh.pp_size() ? " + final norm, LM head" : "");
    std::fprintf(stderr, "pipeline: %d stages (%s)\n", mesh.pp_size(), split.c_str());
  }
  const int s = mesh.pp().rank();
  return {first[size_t(s)], first[size_t(s) + 1] - first[size_t(s)]};
}

}  // namespace

nlohmann::json train_options_json(const TrainOptions& o, int tp_size, int dp_size) {
  return {{"data", o.data},
          {"init", o.init},
          {"tp", tp_size},
          {"dp", dp_size},
          {"batch", o.batch},
          {"seq", o.seq},
          {"steps", o.steps},
          {"grad_accum", o.grad_accum},
          {"lr", o.schedule.lr},
          {"lr_schedule", o.schedule.kind == LrSchedule::Kind::Cosine ? "cosine" : "constant"},
          {"warmup", o.schedule.warmup_steps},
          {"min_lr_ratio", o.schedule.min_lr_ratio},
          {"beta1", o.adamw.beta1},
          {"beta2", o.adamw.beta2},
          {"eps", o.adamw.eps},
          {"weight_decay", o.adamw.weight_decay},
          {"grad_clip", o.grad_clip},
          {"dp_bucket_mb", o.dp_bucket_mb},
          {"dp_overlap", o.dp_async == AsyncMode::Nonblocking ? "nonblocking" : "deferred"},
          {"zero", o.zero},
          {"seed", o.seed},
          {"val_fraction", o.val_fraction},
          {"precision", o.compute.precision == Precision::BF16 ? "bf16" : "f32"},
          {"sequence_parallel", o.compute.sequence_parallel},
          {"save_every", o.save_every},
          {"keep", o.keep},
          {"on_nan", o.on_nan == TrainOptions::OnNan::Skip ? "skip" : "abort"},
          {"max_nan_skips", o.max_nan_skips}};
}

TrainResult train(ProcessGroup& world, const TrainOptions& o) {
  TP_CHECK(o.steps >= 1, ConfigError, "--steps must be at least 1 (got {})", o.steps);
  TP_CHECK(o.dp_bucket_mb >= 0 && o.dp_bucket_mb <= 1e6, ConfigError,
           "--dp-bucket-mb must be between 0 (per-parameter all-reduce) and 1e6 (got {})", o.dp_bucket_mb);
  TP_CHECK(o.grad_accum >= 1, ConfigError, "--grad-accum must be at least 1 (got {})", o.grad_accum);
  check_train_options(o);
  TP_CHECK(o.save_every >= 0 && o.keep >= 0 && o.max_nan_skips >= 0, ConfigError,
           "--save-every ({}), --keep ({}) and --max-nan-skips ({}) must not be negative", o.save_every, o.keep,
           o.max_nan_skips);
  TP_CHECK(o.save_every == 0 || !o.out.empty(), ConfigError, "--save-every needs --out DIR to write checkpoints into");
  TP_CHECK(o.resume != "auto" || !o.out.empty(), ConfigError,
           "--resume auto looks for checkpoints under --out; give --out DIR");
  TP_CHECK(o.resume.empty() || o.init.empty(), ConfigError,
           "--resume and --init both give the starting weights; use one of them");
  const int tp_size = o.tp > 0 ? o.tp : world.size() / std::max(1, o.pp);
  Mesh mesh(world, tp_size, o.pp);
  ProcessGroup& tp = mesh.tp();
  ProcessGroup& dp = mesh.dp();
  const bool writer = world.rank() == 0;
  if (!o.out.empty()) prepare_out(world, o.out);

  // a checkpoint to resume from: its state is read (and every file's checksum verified) first
  std::string resume_dir = o.resume;
  if (resume_dir == "auto") {
    resume_dir = writer ? latest_checkpoint(o.out) : "";
    world.broadcast_string(resume_dir, 0);
    if (writer && o.progress)
      std::fprintf(stderr, "%s\n", resume_dir.empty() ? fmt::format("no checkpoint under {}; starting fresh", o.out).c_str()
                                                      : fmt::format("resuming from {}", resume_dir).c_str());
  }
  CheckpointState resumed;
  if (!resume_dir.empty()) {
    std::string error;
    try {
      resumed = read_checkpoint_state(resume_dir, /*verify=*/writer);
      check_resume_config(resumed.model, o, resume_dir);
    } catch (const Error& e) {
      error = e.what();
    }
    world.agree<ConfigError>(error);
    // a requeued job whose run had finished (auto) has nothing left to train: it only rewrites the final
    // model below (the job may have died between the last checkpoint and that save) and succeeds
    const bool finished = o.resume == "auto" && resumed.step == o.steps;
    TP_CHECK(resumed.step < o.steps || finished, ConfigError,
             "{} is at step {}, which is not below --steps {}; give a larger --steps to train further", resume_dir,
             resumed.step, o.steps);
    if (finished && writer && o.progress)
      std::fprintf(stderr, "%s is at --steps %ld already: nothing to train\n", resume_dir.c_str(), long(o.steps));
  }

  const io::TokenDataset data = load_data(world, o.data);
  ModelConfig config = !resume_dir.empty() ? resumed.model : o.init.empty() ? o.model : io::read_model_config(o.init);
  if (o.init.empty() && resume_dir.empty()) {
    // token files: GPT-2's vocabulary unless --vocab says otherwise (finding the largest id would read
    // the whole data set); ids beyond it are refused as batches are read
    if (config.vocab_size <= 0) config.vocab_size = data.byte_level() ? 256 : 50257;
    if (config.max_seq < o.seq) config.max_seq = o.seq;
  }
  config.validate(tp.size());
  TP_CHECK(o.seq <= config.max_seq, ConfigError, "--seq {} exceeds the model's {} positions", o.seq, config.max_seq);
  const LayerRange stage_layers = pipeline_stage_layers(world, mesh, config, o.progress);
  ModelConfig stage_config = config;  // what this rank holds: a pipeline stage's layers only
  if (stage_layers.count > 0) stage_config.layers = stage_layers.count;
  TransformerLM::check_size(stage_config, tp.size(), o.batch, o.seq, o.compute);  // before any buffer is allocated

  // the tail of the data set is held out for validation when there is enough of it
  const int64_t n = data.size();
  const int64_t val_tokens = int64_t(double(n) * o.val_fraction);
  const bool validate = o.val_fraction > 0 && val_tokens >= 1 &&
                        (val_tokens - 1) / o.batch / o.seq / dp.size() >= 1;  // >= B*T*dp + 1, without overflow
  const int64_t train_end = validate ? n - val_tokens : n;
  DataLoader loader(data, 0, train_end, o.batch, o.seq, dp.rank(), dp.size(), config.vocab_size, o.data);
  std::unique_ptr<DataLoader> val_loader;
  if (validate)
    val_loader = std::make_unique<DataLoader>(data, train_end, n, o.batch, o.seq, dp.rank(), dp.size(),
                                              config.vocab_size, o.data + " (validation split)");

  TransformerLM model(tp, config, o.batch, o.seq, o.seed, o.compute, stage_layers);
  std::unique_ptr<PipelineStage> pipeline;
  if (mesh.pp_size() > 1) pipeline = std::make_unique<PipelineStage>(mesh.pp(), model, o.pp_schedule, int(o.grad_accum));
  if (!o.init.empty()) io::load_hf_checkpoint(tp, model, o.init);
  // ZeRO-1 (--zero 1 with DP > 1) or AdamW replicated on every DP rank
  if (dp.size() > 1) dp.set_async_mode(o.dp_async);
  std::unique_ptr<ZeroOptimizer> zero;
  std::unique_ptr<AdamW> adamw;
  if (o.zero == 1 && dp.size() > 1)
    zero = std::make_unique<ZeroOptimizer>(dp, tp, model, o.adamw, int64_t(o.dp_bucket_mb * 1024 * 1024));
  else
    adamw = std::make_unique<AdamW>(model.parameters(), o.adamw);
  int64_t first_step = 0;
  if (!resume_dir.empty()) {
    if (zero) {  // the checkpoint holds whole moments: keep this rank's shard
      ArenaMoments whole = zero->empty_moments();
      load_checkpoint(tp, model, whole.tensors(model), resume_dir);
      zero->load_moments(whole);
      zero->set_steps_taken(resumed.adamw_steps);
    } else {
      load_checkpoint(tp, model, adamw_moments(*adamw), resume_dir);
      adamw->set_steps_taken(resumed.adamw_steps);
    }
    first_step = resumed.step;
    // the same data layout continues exactly; another DP degree or batch continues from rank 0's
    // position, which is where the next global batch starts
    const bool same_layout = resumed.dp_size == dp.size() && resumed.batch == o.batch && resumed.seq == o.seq;
    loader.seek(same_layout ? resumed.data_positions.at(size_t(dp.rank()))
                            : resumed.data_positions.at(0) + o.batch * o.seq * dp.rank());
  }
  LrSchedule schedule = o.schedule;
  schedule.total_steps = o.steps;

  // a terminal gets one line rewritten in place; a log gets about twenty lines
  const bool terminal = ::isatty(2) != 0;
  const int64_t log_every = std::max<int64_t>(1, o.steps / 20);
  std::unique_ptr<io::MetricsWriter> metrics;
  {  // only rank 0 opens it; agreed on, so an unwritable path stops every rank before the first step
    std::string error;
    try {
      // a resumed run appends (records of steps redone after the checkpoint appear twice; the last counts)
      if (writer && !o.metrics.empty()) metrics = std::make_unique<io::MetricsWriter>(o.metrics, !resume_dir.empty());
    } catch (const Error& e) {
      error = e.what();
    }
    world.agree<IoError>(error);
  }

  std::vector<int32_t> x(size_t(o.batch * o.seq)), y(x.size());
  TrainResult result;
  result.parameters = config.parameter_count();
  result.optimizer_bytes = zero ? zero->optimizer_bytes() : adamw->optimizer_bytes();
  result.first_step = first_step;
  result.resumed_from = resume_dir;
  const double tokens_per_step = double(o.batch * o.seq * o.grad_accum * dp.size());
  double timed_seconds = 0;
  const auto start = Clock::now();
  if (writer && o.progress)
    std::fprintf(stderr, "training %.2fM parameters: TP=%d x DP=%d, %ld layers, hidden %ld, heads %ld, seq %ld, "
                 "batch %ld, %ld steps%s\n",
                 double(result.parameters) / 1e6, tp.size(), dp.size(), long(config.layers), long(config.hidden),
                 long(config.heads), long(o.seq), long(o.batch), long(o.steps),
                 first_step > 0 ? fmt::format(" (resuming at step {})", first_step).c_str() : "");

  const nlohmann::json options_json = train_options_json(o, tp.size(), dp.size());
  const auto checkpoint = [&](int64_t steps_done) {
    CheckpointState state;
    state.step = steps_done;
    state.adamw_steps = zero ? zero->steps_taken() : adamw->steps_taken();
    state.tp_size = tp.size();
    state.dp_size = dp.size();
    state.batch = o.batch;
    state.seq = o.seq;
    state.grad_accum = o.grad_accum;
    state.data_positions.resize(size_t(dp.size()));
    const int64_t position = loader.position();
    dp.all_gather(std::span<int64_t>(state.data_positions), std::span<const int64_t>(&position, 1));
    state.seed = o.seed;
    state.model = config;
    state.options = options_json;
    const auto t0 = Clock::now();
    ArenaMoments gathered;  // ZeRO-1: the shards gathered whole, saved as the replicated optimizer's
    if (zero) gathered = zero->gather_moments();
    result.last_checkpoint = save_checkpoint(world, tp, dp, model, zero ? gathered.tensors(model) : adamw_moments(*adamw),
                                             state, o.out, o.keep, pipeline ? &mesh.model_parallel() : nullptr);
    if (metrics)
      metrics->write({{"step", steps_done},
                      {"checkpoint", result.last_checkpoint},
                      {"checkpoint_seconds", std::chrono::duration<double>(Clock::now() - t0).count()}});
  };

  // data-parallel gradient buckets over the arena, cut at parameter starts
  std::unique_ptr<GradBuckets> buckets;
  TransformerLM::GradsReady on_grads_ready;
  if (zero) {
    result.dp_buckets = int64_t(zero->bucket_count());
    on_grads_ready = [&zero](int64_t n) { zero->ready(n); };
  } else if (dp.size() > 1 && o.dp_bucket_mb > 0) {
    std::vector<int64_t> cuts;
    for (const Parameter* p : model.grad_order()) cuts.push_back(model.grad_offset(*p));
    buckets = std::make_unique<GradBuckets>(dp, model.grad_arena(), cuts, int64_t(o.dp_bucket_mb * 1024 * 1024));
    result.dp_buckets = int64_t(buckets->bucket_count());
    on_grads_ready = [&buckets](int64_t n) { buckets->ready(n); };
  }

  int64_t nan_in_row = 0;
  double pp_wait = 0, pp_busy = 0;  // pipeline bubble: seconds waiting / seconds in pipeline steps
  for (int64_t step = first_step; step < o.steps; ++step) {
    const auto t0 = Clock::now();
    model.zero_grad();
    double loss = 0;
    if (pipeline) {
      loss = pipeline->step([&loader](int32_t* a, int32_t* b) { loader.next(a, b); }, on_grads_ready);
      result.pp_max_in_flight = pipeline->measured_max_in_flight();
      if (step > first_step || o.steps - first_step == 1) {  // the first step warms up, as for tokens/s
        pp_wait += pipeline->wait_seconds();
        pp_busy += pipeline->step_seconds();
      }
    }
    for (int64_t micro = 0; micro < (pipeline ? 0 : o.grad_accum); ++micro) {
      loader.next(x.data(), y.data());
      loss += model.forward(x.data(), y.data(), o.batch, o.seq) / double(o.grad_accum);
      // gradients are final only in the last micro-batch's backward: its buckets start as they fill
      const bool last = micro + 1 == o.grad_accum;
      model.backward(x.data(), y.data(), o.batch, o.seq, 1.0f / float(o.grad_accum),
                     last ? on_grads_ready : TransformerLM::GradsReady{});
    }
    if (dp.size() > 1) {  // average gradients and the loss over data-parallel replicas
      if (zero) {
        zero->finish_gradients();
      } else if (buckets) {
        buckets->finish();
      } else {
        for (Parameter* p : model.parameters()) {
          dp.all_reduce(p->grad.span());
          for (float& g : p->grad.span()) g /= float(dp.size());
        }
      }
      dp.all_reduce(std::span<double>(&loss, 1));
      loss /= dp.size();
    }
    if (o.inject_nan_at_step == step + 1) {
      const std::span<float> g = zero ? zero->first_local_gradient() : model.parameters().front()->grad.span();
      if (!g.empty()) g[0] = std::numeric_limits<float>::quiet_NaN();
    }
    if (pipeline) pipeline->sum_tied_embedding_grad(mesh.embedding());
    const double norm = zero       ? zero->clip_grad_norm(o.grad_clip)
                        : pipeline ? clip_grad_norm(tp, mesh.pp(), model.parameters(), pipeline->counted_elsewhere(),
                                                    o.grad_clip)
                                   : clip_grad_norm(tp, model.parameters(), o.grad_clip);
    const float lr = schedule.at(step);
    // The loss is the same on every rank (all-reduced over DP, and over TP inside the loss) and so
    // is the norm (all-reduced over TP of DP-averaged gradients): every rank takes the same branch.
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite) {
      nan_in_row = 0;
      zero ? zero->step(lr) : adamw->step(lr);
    } else {
      TP_CHECK(o.on_nan == TrainOptions::OnNan::Skip, Error,
               "step {}: the loss is {} and the gradient norm {}; training stopped before the update reached the "
               "weights (lower --lr, check the data, or drop such steps with --on-nan skip)",
               step + 1, loss, norm);
      ++nan_in_row;
      ++result.skipped_steps;
      TP_CHECK(nan_in_row <= o.max_nan_skips, Error,
               "step {}: {} steps in a row had a non-finite loss or gradient norm (--max-nan-skips {}); the run "
               "diverged: lower --lr or resume from an earlier checkpoint",
               step + 1, nan_in_row, o.max_nan_skips);
      if (writer && o.progress)
        std::fprintf(stderr, "step %ld: loss %g, gradient norm %g: update skipped (--on-nan skip, %ld in a row)\n",
                     long(step + 1), loss, norm, long(nan_in_row));
    }
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t run_steps = step - first_step;  // steps of this call before this one
    if (run_steps > 0 || o.steps - first_step == 1) timed_seconds += dt;
    const int64_t timed_steps = o.steps - first_step == 1 ? 1 : run_steps;
    const double tokens_per_s = timed_steps > 0 && timed_seconds > 0 ? tokens_per_step * double(timed_steps) / timed_seconds
                                                                     : tokens_per_step / dt;
    result.history.push_back({float(loss), norm, lr});
    result.loss = float(loss);
    result.grad_norm = norm;
    result.tokens_per_s = tokens_per_s;
    result.steps = run_steps + 1;
    if (metrics) {
      nlohmann::json record{{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tokens_per_s}};
      if (!finite) record["skipped"] = true;
      metrics->write(record);
    }

    const bool last = step + 1 == o.steps;
    if (val_loader && ((o.val_every > 0 && (step + 1) % o.val_every == 0) || last)) {
      result.val_loss = mean_validation_loss(model, pipeline.get(), *val_loader, o.val_batches, o.batch, o.seq, x, y, dp);
      if (metrics) metrics->write({{"step", step + 1}, {"val_loss", result.val_loss}});
    }
    if (writer && o.progress && (terminal || last || (step + 1) % log_every == 0)) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double eta = elapsed / double(run_steps + 1) * double(o.steps - step - 1);
      std::string line = fmt::format("step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s | ETA {}",
                                     step + 1, std::to_string(o.steps).size(), o.steps, loss, lr, norm, tokens_per_s,
                                     format_duration(eta));
      if (result.val_loss >= 0) line += fmt::format(" | val {:.4f}", result.val_loss);
      if (terminal)
        std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), last ? "\n" : "");
      else
        std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
    }

    // a stop request on any rank (SIGTERM before preemption) stops all of them after this step:
    // one all-reduce of one integer per step, only when a stop can be requested
    int64_t stop = 0;
    if (o.stop_signal) {
      stop = o.stop_signal();
      world.all_reduce(std::span<int64_t>(&stop, 1), {ReduceOp::Max});
    }
    const bool cadence = o.save_every > 0 && ((step + 1) % o.save_every == 0 || last);
    if (cadence || (stop != 0 && !o.out.empty())) checkpoint(step + 1);
    if (stop != 0) {
      result.stop_signal = int(stop);
      if (writer && o.progress) {
        if (terminal && !last) std::fprintf(stderr, "\n");
        std::fprintf(stderr, "stopped by signal %d after step %ld%s\n", int(stop), long(step + 1),
                     o.out.empty() ? " (no --out: nothing saved)"
                                   : fmt::format("; resume with --resume {}", result.last_checkpoint).c_str());
      }
      world.barrier();
      return result;
    }
  }

  if (pipeline) {
    double bubble = pp_busy > 0 ? pp_wait / pp_busy : 0;
    world.all_reduce(std::span<double>(&bubble, 1));
    result.pp_bubble = bubble / world.size();
    result.pp_bubble_ideal = ideal_bubble_fraction(mesh.pp_size(), int(o.grad_accum));
  }
  if (!o.out.empty()) {  // one replica saves; every rank learns the outcome
    std::string error;
    try {
      if (dp.rank() == 0 && !pipeline) io::save_hf_checkpoint(tp, model, o.out);
      if (dp.rank() == 0 && pipeline) io::save_hf_checkpoint(tp, model, o.out, &mesh.model_parallel());
    } catch (const Error& e) {
      error = e.what();
    }
    world.agree<IoError>(error);
  }
  world.barrier();
  return result;
}

}  // namespace tensorpar
