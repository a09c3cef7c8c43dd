// tensorpar train: train a GPT-2 (or Llama) model with tensor parallelism on a token or text file.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/cli/stop_signals.hpp"
#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/io/model_config_file.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar::cli {

namespace {

// With --init the model's shape comes from the checkpoint; a shape flag given as well must agree with
// it, or the user would train a model other than the one they asked for without being told.
void check_flags_match_checkpoint(const CLI::App& cmd, const TrainOptions& o, const std::string& family) {
  const ModelConfig c = io::read_model_config(o.init);
  const std::string where = o.init + "/config.json";
  if (cmd.count("--family") > 0) {
    const std::string theirs = c.family == ModelFamily::Gpt2 ? "gpt2" : "llama";
    TP_CHECK(family == theirs, ConfigError, "--family {} conflicts with the {} model in {}; drop the flag or --init",
             family, theirs, where);
  }
  const std::pair<const char*, std::pair<int64_t, int64_t>> sizes[] = {
      {"--layers", {o.model.layers, c.layers}},     {"--hidden", {o.model.hidden, c.hidden}},
      {"--heads", {o.model.heads, c.heads}},        {"--kv-heads", {o.model.kv_heads, c.kv_heads_or_heads()}},
      {"--ffn", {o.model.ffn_hidden, c.ffn_or_default()}}, {"--vocab", {o.model.vocab_size, c.vocab_size}}};
  for (const auto& [flag, values] : sizes)
    TP_CHECK(cmd.count(flag) == 0 || values.first == values.second, ConfigError,
             "{} {} conflicts with the checkpoint's {} in {}; drop the flag (the shape comes from --init)", flag,
             values.first, values.second, where);
}

}  // namespace

void add_train_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("train", "train a model (mpirun -np N tensorpar train ...)");
  auto o = std::make_shared<TrainOptions>();
  auto lr_schedule = std::make_shared<std::string>("cosine");
  auto family = std::make_shared<std::string>("gpt2");
  auto json = std::make_shared<bool>(false);
  auto precision = std::make_shared<std::string>("f32");
  o->model.vocab_size = 0;  // from the data unless given
  o->model.layers = 4;
  o->model.hidden = 256;
  o->model.heads = 8;
  o->schedule.lr = 1e-3f;
  o->schedule.warmup_steps = 10;
  cmd->add_option("--data", o->data, "llm.c token file (.bin) or plain text file")->required();
  cmd->add_option("--init", o->init, "start from this Hugging Face model directory (config.json + model.safetensors)");
  cmd->add_option("--out", o->out,
                  "save model.safetensors + config.json here at the end, and checkpoints (step_*) with --save-every");
  cmd->add_option("--save-every", o->save_every,
                  "write a checkpoint OUT/step_XXXXXXXX every N steps and at the end (0: none)")
      ->capture_default_str();
  cmd->add_option("--keep", o->keep, "keep only the newest K checkpoints (0: all)")->capture_default_str();
  cmd->add_option("--resume", o->resume,
                  "continue from a checkpoint directory (OUT/step_XXXXXXXX), or 'auto': the newest under --out "
                  "(a fresh start if there is none)");
  auto on_nan = std::make_shared<std::string>("abort");
  cmd->add_option("--on-nan", *on_nan,
                  "a step whose loss or gradient norm is not finite: abort (with the step number), or skip its update")
      ->check(CLI::IsMember({"abort", "skip"}))
      ->capture_default_str();
  cmd->add_option("--max-nan-skips", o->max_nan_skips, "with --on-nan skip: abort after this many such steps in a row")
      ->capture_default_str();
  cmd->add_option("--metrics", o->metrics, "write one JSON object per step to this file");
  cmd->add_option("--family", *family, "model family of a fresh model: gpt2 or llama")->check(CLI::IsMember({"gpt2", "llama"}));
  cmd->add_option("--layers", o->model.layers, "transformer blocks")->capture_default_str();
  cmd->add_option("--hidden", o->model.hidden, "hidden size")->capture_default_str();
  cmd->add_option("--heads", o->model.heads, "attention heads (divisible by the TP degree)")->capture_default_str();
  cmd->add_option("--kv-heads", o->model.kv_heads, "key/value heads for grouped-query attention (llama)");
  cmd->add_option("--ffn", o->model.ffn_hidden, "MLP hidden size (default 4 x hidden)");
  cmd->add_option("--vocab", o->model.vocab_size, "vocabulary size (default: 256 for text, 50257 for token files)");
  cmd->add_option("--seq", o->seq, "sequence length")->capture_default_str();
  cmd->add_option("--batch", o->batch, "sequences per micro-batch (per data-parallel rank)")->capture_default_str();
  cmd->add_option("--grad-accum", o->grad_accum, "micro-batches per step")->capture_default_str();
  cmd->add_option("--dp-bucket-mb", o->dp_bucket_mb,
                  "data-parallel gradient bucket size in MB, all-reduced during backward (0: per parameter after it)")
      ->capture_default_str();
  cmd->add_option_function<std::string>(
         "--dp-overlap",
         [o](const std::string& mode) {
           o->dp_async = mode == "deferred" ? AsyncMode::Deferred : AsyncMode::Nonblocking;
         },
         "how bucket all-reduces run: nonblocking (MPI_Iallreduce, overlaps backward) or deferred (blocking, at the step's end) [nonblocking]")
      ->check(CLI::IsMember({"nonblocking", "deferred"}));
  cmd->add_option("--zero", o->zero,
                  "1: ZeRO-1, AdamW state sharded over the data-parallel ranks (gradients reduce-scattered in the "
                  "same buckets, weights all-gathered; optimizer memory / DP; a no-op with DP=1); 0: off")
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--lr", o->schedule.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--warmup", o->schedule.warmup_steps, "linear warm-up steps")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o->schedule.min_lr_ratio, "final cosine learning rate / peak")->capture_default_str();
  cmd->add_option("--lr-schedule", *lr_schedule, "cosine or constant")->capture_default_str();
  cmd->add_option("--beta1", o->adamw.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", o->adamw.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--eps", o->adamw.eps, "AdamW epsilon")->capture_default_str();
  cmd->add_option("--weight-decay", o->adamw.weight_decay, "decoupled weight decay of 2-D weights")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "clip the global gradient norm to this (0: off)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "initialisation seed")->capture_default_str();
  cmd->add_option("--tp", o->tp, "tensor-parallel degree (default: all ranks; the rest is data-parallel)");
  cmd->add_option("--pp", o->pp,
                  "pipeline stages: the layers split into P contiguous stages; ranks = tp x pp x dp, --grad-accum "
                  "micro-batches per step")
      ->capture_default_str();
  auto pp_schedule = std::make_shared<std::string>("1f1b");
  cmd->add_option("--pp-schedule", *pp_schedule,
                  "pipeline schedule: 1f1b (at most P micro-batches in flight) or gpipe (all forwards, then all backwards)")
      ->check(CLI::IsMember({"1f1b", "gpipe"}))
      ->capture_default_str();
  cmd->add_option("--val-fraction", o->val_fraction, "tail of the data held out for validation")->capture_default_str();
  cmd->add_option("--val-every", o->val_every, "validate every N steps (0: at the end only)")->capture_default_str();
  cmd->add_option("--val-batches", o->val_batches, "batches per validation")->capture_default_str();
  cmd->add_option("--precision", *precision, "GEMM precision: f32, or bf16 (f32 master weights and accumulation)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_flag("--sequence-parallel", o->compute.sequence_parallel,
                "split the tokens outside the tensor-parallel regions over the group (Korthikanti et al. 2022)");
  auto recompute = std::make_shared<std::string>("none");
  cmd->add_option("--recompute", *recompute,
                  "activation recomputation: none, attention (selective: the attention output) or full (each "
                  "block's forward again in backward)")
      ->check(CLI::IsMember({"none", "attention", "full"}))
      ->capture_default_str();
  cmd->add_flag("--json", *json, "print one JSON object with the results as the last line of stdout");
  auto tp_comm_dtype = std::make_shared<std::string>("f32");
  add_tp_comm_dtype_option(cmd, *tp_comm_dtype);
  cmd->callback([=, &run] {
    std::vector<std::string> given;
    for (const char* flag : {"layers", "hidden", "heads", "kv-heads", "ffn", "vocab", "family"})
      if (cmd->count(std::string("--") + flag) > 0) given.push_back(flag);
    run = [=](ProcessGroup& world) {
      TrainOptions options = *o;
      if (!options.init.empty()) {  // rank-local file read: agree before anything collective
        std::string error;
        try {
          check_flags_match_checkpoint(*cmd, options, *family);
        } catch (const Error& e) {
          error = e.what();
        }
        world.agree<ConfigError>(error);
      }
      options.given_model_flags = given;
      options.on_nan = *on_nan == "skip" ? TrainOptions::OnNan::Skip : TrainOptions::OnNan::Abort;
      options.stop_signal = take_stop_signal;  // blocked since main, polled after each step
      // test hook (tests/cli): a NaN gradient at this step, to exercise --on-nan
      if (const char* at = std::getenv("TENSORPAR_TEST_NAN_AT_STEP")) options.inject_nan_at_step = std::atoll(at);
      options.schedule.kind = LrSchedule::parse_kind(*lr_schedule);
      options.compute.precision = parse_precision(*precision);
      options.compute.tp_comm_dtype = parse_comm_dtype(*tp_comm_dtype);
      options.compute.recompute = parse_recompute(*recompute);
      options.pp_schedule = parse_pipeline_schedule(*pp_schedule);
      if (*family == "llama") {
        options.model.family = ModelFamily::Llama;
        options.model.tie_embeddings = false;
        options.model.norm_eps = 1e-6f;
      }
      const TrainResult r = train(world, options);
      // the largest peak resident memory of any rank: it must not grow with the data set (mmap)
      struct rusage usage {};
      ::getrusage(RUSAGE_SELF, &usage);
      double peak_rss_mb = double(usage.ru_maxrss) / 1024.0;  // kB -> MB
      world.all_reduce(std::span<double>(&peak_rss_mb, 1), {ReduceOp::Max});
      nlohmann::json j{{"loss", r.loss}, {"tokens_per_s", r.tokens_per_s}, {"grad_norm", r.grad_norm},
                       {"steps", r.steps}, {"parameters", r.parameters}, {"dp_buckets", r.dp_buckets}, {"peak_rss_mb", peak_rss_mb}};
      // AdamW state bytes of each rank (ZeRO-1 shards differ by a few elements when DP does not divide a bucket)
      std::vector<int64_t> optimizer_bytes(size_t(world.size()));
      world.all_gather(std::span<int64_t>(optimizer_bytes), std::span<const int64_t>(&r.optimizer_bytes, 1));
      j["optimizer_bytes"] = *std::max_element(optimizer_bytes.begin(), optimizer_bytes.end());
      j["optimizer_bytes_per_rank"] = optimizer_bytes;
      if (r.val_loss >= 0) j["val_loss"] = r.val_loss;
      if (options.pp > 1) {
        j["pp_bubble"] = r.pp_bubble;
        j["pp_bubble_ideal"] = r.pp_bubble_ideal;
      }
      if (!options.out.empty()) j["out"] = options.out;
      if (!r.last_checkpoint.empty()) j["checkpoint"] = r.last_checkpoint;
      if (!r.resumed_from.empty()) j["resumed_from"] = r.resumed_from;
      if (r.skipped_steps > 0) j["skipped_steps"] = r.skipped_steps;
      if (r.stop_signal != 0) j["stopped_by_signal"] = r.stop_signal;
      const std::string saved = r.stop_signal != 0 ? (r.last_checkpoint.empty() ? "" : ", checkpoint " + r.last_checkpoint)
                                : options.out.empty()  ? ""
                                                       : ", saved to " + options.out;
      print_rank0(world, *json ? j.dump() + "\n"
                               : fmt::format("{} loss {:.4f}{}, {:.0f} tokens/s{}\n", r.stop_signal ? "stopped," : "final",
                                             r.loss,
                                             r.val_loss >= 0 ? fmt::format(" (validation {:.4f})", r.val_loss) : "",
                                             r.tokens_per_s, saved));
      // stopped by a signal after a clean checkpoint: the shell convention 128 + signal (143 TERM, 130 INT)
      return r.stop_signal != 0 ? 128 + r.stop_signal : 0;
    };
  });
}

}  // namespace tensorpar::cli
