// tensorpar bench: training throughput of a preset model against this machine's measured peak.
#include <nlohmann/json.hpp>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/train/benchmark.hpp"

namespace tensorpar::cli {

void add_bench_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("bench", "measure training throughput (tokens/s, GFLOP/s, MFU, comm share, memory)");
  auto o = std::make_shared<BenchOptions>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--preset", o->preset, "gpt-bench or gpt2-small")->capture_default_str();
  cmd->add_option("--steps", o->steps, "timed steps")->capture_default_str();
  cmd->add_option("--warmup", o->warmup_steps, "untimed steps first")->capture_default_str();
  cmd->add_option("--batch", o->batch, "override the preset's batch size");
  cmd->add_option("--seq", o->seq, "override the preset's sequence length, keeping its tokens per step");
  cmd->add_option("--hidden", o->hidden, "override the preset's width (64 per head)");
  cmd->add_option("--tp", o->tp, "tensor-parallel degree (default: all ranks over --pp)");
  cmd->add_option("--pp", o->pp, "pipeline stages (ranks = tp x pp x dp); reports the bubble")->capture_default_str();
  cmd->add_option("--micro-batches", o->micro_batches, "micro-batches per step (each --batch sequences)")
      ->capture_default_str();
  auto pp_schedule = std::make_shared<std::string>("1f1b");
  cmd->add_option("--pp-schedule", *pp_schedule, "pipeline schedule: 1f1b or gpipe")
      ->check(CLI::IsMember({"1f1b", "gpipe"}))
      ->capture_default_str();
  auto overlap = std::make_shared<std::string>("deferred");
  auto precision = std::make_shared<std::string>("f32");
  cmd->add_option("--precision", *precision, "f32 or bf16 GEMMs")->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  cmd->add_option("--overlap", *overlap,
                  "dX all-reduce of the backward: nonblocking (MPI_Iallreduce during the dW GEMM) or deferred "
                  "(blocking, after it)")
      ->check(CLI::IsMember({"nonblocking", "deferred"}))
      ->capture_default_str();
  cmd->add_flag("--sequence-parallel", o->compute.sequence_parallel, "sequence parallelism");
  auto recompute = std::make_shared<std::string>("none");
  cmd->add_option("--recompute", *recompute, "activation recomputation: none, attention (selective) or full")
      ->check(CLI::IsMember({"none", "attention", "full"}))
      ->capture_default_str();
  cmd->add_flag("--profile", o->profile, "print where the time of a step goes (rank 0)");
  cmd->add_flag("--json", *json, "print one JSON object as the last stdout line");
  auto tp_comm_dtype = std::make_shared<std::string>("f32");
  add_tp_comm_dtype_option(cmd, *tp_comm_dtype);
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      BenchOptions options = *o;
      options.async_mode = *overlap == "nonblocking" ? AsyncMode::Nonblocking : AsyncMode::Deferred;
      options.compute.precision = parse_precision(*precision);
      options.compute.tp_comm_dtype = parse_comm_dtype(*tp_comm_dtype);
      options.compute.recompute = parse_recompute(*recompute);
      options.pp_schedule = parse_pipeline_schedule(*pp_schedule);
      const BenchResult r = run_benchmark(world, options);
      nlohmann::json j{{"preset", o->preset},
                             {"overlap", *overlap},
                             {"precision", *precision},
                             {"sequence_parallel", o->compute.sequence_parallel},
                             {"mfu_bf16", r.mfu_bf16},
                             {"bf16_native", r.bf16_native},
                             {"tp", r.tp},
                             {"dp", r.dp},
                             {"pp", r.pp},
                             {"micro_batches", o->micro_batches},
                             {"pp_bubble", r.pp_bubble},
                             {"pp_bubble_ideal", r.pp_bubble_ideal},
                             {"threads_per_rank", r.threads_per_rank},
                             {"parameters", r.parameters},
                             {"seq", r.seq},
                             {"batch", r.batch},
                             {"hidden", r.hidden},
                             {"tokens_per_s", r.tokens_per_s},
                             {"step_seconds", r.step_seconds},
                             {"achieved_gflops", r.achieved_gflops},
                             {"peak_gflops", r.peak_gflops},
                             {"peak_gflops_per_core", r.peak_gflops_per_core},
                             {"mfu", r.mfu},
                             {"comm_fraction", r.comm_fraction},
                             {"peak_rss_mb", r.peak_rss_mb},
                             {"recompute", *recompute},
                             {"activation_bytes_per_layer", r.activation_bytes_per_layer},
                             {"activation_bytes_per_layer_formula", r.activation_bytes_per_layer_formula},
                             {"activation_bytes_per_layer_korthikanti", r.activation_bytes_per_layer_korthikanti},
                             {"activation_bytes", r.activation_bytes},
                             {"parameter_bytes_per_rank", r.parameter_bytes_per_rank},
                             {"parameter_bytes_expected", r.parameter_bytes_expected},
                             {"loss", r.loss}};
      print_rank0(world,
                  fmt::format("{}: TP={} DP={} x {} thread(s), {:.1f}M parameters\n"
                              "  {:.0f} tokens/s, {:.3f} s/step\n"
                              "  {:.1f} GFLOP/s achieved of {:.1f} peak ({:.1f} per core measured now): MFU {:.1f}%\n"
                              "  communication {:.1f}% of step time, peak RSS {:.0f} MB per rank\n{}",
                              o->preset, r.tp, r.dp, r.threads_per_rank, double(r.parameters) / 1e6, r.tokens_per_s,
                              r.step_seconds, r.achieved_gflops, r.peak_gflops, r.peak_gflops_per_core, 100 * r.mfu,
                              100 * r.comm_fraction, r.peak_rss_mb,
                              r.mfu_bf16 > 0 ? fmt::format("  bf16: MFU {:.1f}% of the {:.1f} GFLOP/s bf16 peak\n",
                                                           100 * r.mfu_bf16, r.peak_bf16_gflops)
                              : options.compute.precision == Precision::BF16
                                  ? "  bf16: this CPU has no bf16 dot product (AVX512-BF16), so the bf16 GEMMs run "
                                    "widened to f32: the MFU above, against the f32 peak, is the measure\n"
                                  : ""));
      print_rank0(world, fmt::format("  activations (recompute {}): {:.2f} MB per layer per rank held, {:.2f} MB by our "
                                     "formula, {:.2f} MB by Korthikanti et al. at f32; {:.2f} MB in all\n"
                                     "  parameters + gradients + AdamW state: {:.2f} MB per rank ({:.2f} MB expected: "
                                     "replicated + 1/{} of the sharded)\n",
                                     *recompute, double(r.activation_bytes_per_layer) / 1e6,
                                     r.activation_bytes_per_layer_formula / 1e6,
                                     r.activation_bytes_per_layer_korthikanti / 1e6, double(r.activation_bytes) / 1e6,
                                     double(r.parameter_bytes_per_rank) / 1e6, r.parameter_bytes_expected / 1e6, r.tp));
      if (r.pp > 1)
        print_rank0(world, fmt::format("  pipeline: {} stages, {} micro-batches ({}): bubble {:.1f}% of step time "
                                       "(ideal (P-1)/(m+P-1) = {:.1f}%)\n",
                                       r.pp, o->micro_batches, *pp_schedule, 100 * r.pp_bubble, 100 * r.pp_bubble_ideal));
      if (o->profile) {
        std::string table = "  per step, rank 0 (phases nest; collectives include waiting for the other ranks; a phase inside an "
                            "OpenMP region, e.g. attention's GEMMs, adds up over its threads):\n";
        for (const auto& [phase, e] : profile())
          table += fmt::format("    {:<32} {:8.2f} ms {:5.1f}%  ({} calls)\n", phase, 1e3 * e.seconds / double(o->steps),
                               100 * e.seconds / (r.step_seconds * double(o->steps)), e.calls / o->steps);
        print_rank0(world, table);
      }
      if (*json) {
        if (o->profile) {  // rank 0's phases, seconds per step (for sweeps: attention's share as T grows)
          nlohmann::json phases = nlohmann::json::object();
          for (const auto& [phase, e] : profile()) phases[phase] = e.seconds / double(o->steps);
          j["profile_seconds_per_step"] = phases;
        }
        print_rank0(world, j.dump() + "\n");
      }
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
