// tensorpar plan: every (TP, DP) layout of a model on H hosts x R ranks, with predicted memory per
// rank and step time (train/plan.hpp), marked where it does not fit, and the one to use.
// With --probe (run it under the same mpirun as training) the speeds are measured here first.
#include <nlohmann/json.hpp>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/io/model_config_file.hpp"
#include "tensorpar/train/plan.hpp"
#include "tensorpar/train/plan_probe.hpp"

namespace tensorpar::cli {

namespace {

struct PlanArgs {
  std::string model_dir, family = "gpt2", precision = "f32", recompute = "none";
  ModelConfig model;
  int64_t seq = 1024, global_batch = 0;
  int hosts = 0, ranks_per_host = 0, zero = 0;
  std::string memory_per_host = "0", overhead = "256MiB", intra_bw = "10GB/s", inter_bw = "1gbit",
              intra_latency = "5us", inter_latency = "50us";
  double gemm_gflops = 10;
  bool probe = false, sequence_parallel = false, json = false;
};

std::string gib(double bytes) { return fmt::format("{:.3f} GiB", bytes / double(1ull << 30)); }

nlohmann::json comm_json(const CommStats& s) {
  nlohmann::json j = nlohmann::json::object();
  for (Collective c : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter})
    if (s.count(c) > 0) j[collective_name(c)] = {{"calls", s.count(c)}, {"bytes", s.bytes[size_t(c)]}};
  return j;
}

nlohmann::json layout_json(const LayoutPlan& p) {
  nlohmann::json j{{"tp", p.tp}, {"dp", p.dp}, {"valid", p.invalid.empty()}};
  if (!p.invalid.empty()) {
    j["invalid"] = p.invalid;
    return j;
  }
  j.update({{"micro_batch", p.micro_batch},
            {"fits", p.fits},
            {"tp_crosses_hosts", p.tp_crosses_hosts},
            {"dp_crosses_hosts", p.dp_crosses_hosts},
            {"parameters_per_rank", p.parameters_per_rank},
            {"memory_bytes",
             {{"weights", p.memory.weights},
              {"gradients", p.memory.gradients},
              {"optimizer", p.memory.optimizer},
              {"activations", p.memory.activations},
              {"buffers", p.memory.buffers},
              {"overhead", p.memory.overhead},
              {"total", p.memory.total()}}},
            {"comm_per_step", {{"tp", comm_json(p.tp_comm)}, {"dp", comm_json(p.dp_comm)}, {"kv", comm_json(p.kv_comm)}}},
            {"flops_per_rank", p.flops_per_rank},
            {"compute_s", p.compute_s},
            {"tp_comm_s", p.tp_comm_s},
            {"dp_comm_s", p.dp_comm_s},
            {"step_s", p.step_s},
            {"tokens_per_s", p.tokens_per_s},
            {"comm_share", p.comm_share()}});
  return j;
}

std::string table(const std::vector<LayoutPlan>& plans, int best, const PlanHardware& hw) {
  std::string out = fmt::format("{:<12} {:<5} {:>14} {:>11} {:>11} {:>6}  {}\n", "layout", "fits", "memory/rank",
                                "step ms", "tokens/s", "comm", "links (TP, DP)");
  for (size_t i = 0; i < plans.size(); ++i) {
    const LayoutPlan& p = plans[i];
    const std::string layout = fmt::format("TP={}xDP={}", p.tp, p.dp);
    if (!p.invalid.empty()) {
      out += fmt::format("{:<12} invalid: {}\n", layout, p.invalid);
      continue;
    }
    auto link = [](int size, bool crosses) { return size == 1 ? "-" : crosses ? "inter" : "intra"; };
    out += fmt::format("{:<12} {:<5} {:>14} {:>11.1f} {:>11.0f} {:>5.0f}%  {}, {}{}\n", layout, p.fits ? "yes" : "NO",
                       gib(p.memory.total()), p.step_s * 1e3, p.tokens_per_s, 100 * p.comm_share(),
                       link(p.tp, p.tp_crosses_hosts), link(p.dp, p.dp_crosses_hosts),
                       int(i) == best ? "   <- recommended" : "");
  }
  if (best < 0)
    out += hw.memory_per_host > 0 ? fmt::format("no valid layout fits {} per host\n", gib(hw.memory_per_host))
                                  : "no valid layout\n";
  return out;
}

}  // namespace

void add_plan_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("plan", "predict memory and step time of every (TP, DP) layout and recommend one");
  auto a = std::make_shared<PlanArgs>();
  a->model.vocab_size = 256;
  a->model.layers = 4;
  a->model.hidden = 256;
  a->model.heads = 8;
  cmd->add_option("--model", a->model_dir, "Hugging Face model directory (config.json); else the shape flags");
  cmd->add_option("--family", a->family, "gpt2 or llama")->check(CLI::IsMember({"gpt2", "llama"}));
  cmd->add_option("--layers", a->model.layers, "transformer blocks")->capture_default_str();
  cmd->add_option("--hidden", a->model.hidden, "hidden size")->capture_default_str();
  cmd->add_option("--heads", a->model.heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", a->model.kv_heads, "key/value heads (llama GQA)");
  cmd->add_option("--ffn", a->model.ffn_hidden, "MLP hidden size (default 4 x hidden)");
  cmd->add_option("--vocab", a->model.vocab_size, "vocabulary size")->capture_default_str();
  cmd->add_option("--seq", a->seq, "sequence length")->capture_default_str();
  cmd->add_option("--global-batch", a->global_batch, "sequences per optimizer step over all replicas")->required();
  cmd->add_option("--hosts", a->hosts, "hosts (default with --probe: as MPI sees them)");
  cmd->add_option("--ranks-per-host", a->ranks_per_host, "MPI ranks per host, consecutive ranks on one host (with --probe: default as MPI sees them, MPI_COMM_TYPE_SHARED)");
  cmd->add_option("--memory-per-host", a->memory_per_host, "memory per host, e.g. 24GiB (0: do not check)")
      ->capture_default_str();
  cmd->add_option("--overhead-per-rank", a->overhead, "memory per rank outside the model (process, MPI, libraries)")
      ->capture_default_str();
  cmd->add_option("--intra-bw", a->intra_bw, "all-reduce bandwidth inside a host, e.g. 10GB/s")->capture_default_str();
  cmd->add_option("--inter-bw", a->inter_bw, "bandwidth of one host's link, e.g. 1gbit, 100mbit")->capture_default_str();
  cmd->add_option("--intra-latency", a->intra_latency, "latency per message inside a host")->capture_default_str();
  cmd->add_option("--inter-latency", a->inter_latency, "latency per message between hosts")->capture_default_str();
  cmd->add_option("--gflops", a->gemm_gflops, "compute rate per rank in GFLOP/s (GEMM rate, see bench)")
      ->capture_default_str();
  cmd->add_flag("--probe", a->probe,
                "measure the compute rate and, under mpirun, the intra/inter-host all-reduce speed first");
  cmd->add_option("--precision", a->precision, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  cmd->add_flag("--sequence-parallel", a->sequence_parallel, "sequence parallelism");
  cmd->add_option("--recompute", a->recompute, "none, attention or full")
      ->check(CLI::IsMember({"none", "attention", "full"}))
      ->capture_default_str();
  cmd->add_option("--zero", a->zero, "1: ZeRO-1, AdamW state sharded over data parallelism")
      ->check(CLI::IsMember({0, 1}))
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object as the last line of stdout");
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      PlanModel m;
      if (!a->model_dir.empty()) {
        m.model = io::read_model_config(a->model_dir);
      } else {
        m.model = a->model;
        if (a->family == "llama") {
          m.model.family = ModelFamily::Llama;
          m.model.tie_embeddings = false;
        }
        m.model.max_seq = std::max(m.model.max_seq, a->seq);
      }
      TP_CHECK(a->seq <= m.model.max_seq, ConfigError, "--seq {} exceeds the model's {} positions", a->seq,
               m.model.max_seq);
      m.model.validate(1);
      m.seq = a->seq;
      m.global_batch = a->global_batch;
      m.compute.precision = parse_precision(a->precision);
      m.compute.recompute = parse_recompute(a->recompute);
      m.compute.sequence_parallel = a->sequence_parallel;
      m.zero1 = a->zero == 1;

      PlanHardware hw;
      hw.memory_per_host = parse_bytes(a->memory_per_host, "--memory-per-host");
      hw.overhead_per_rank = parse_bytes(a->overhead, "--overhead-per-rank");
      hw.intra_bw = parse_bandwidth(a->intra_bw, "--intra-bw");
      hw.inter_bw = parse_bandwidth(a->inter_bw, "--inter-bw");
      hw.intra_latency = parse_duration(a->intra_latency, "--intra-latency");
      hw.inter_latency = parse_duration(a->inter_latency, "--inter-latency");
      TP_CHECK(a->gemm_gflops > 0, ConfigError, "--gflops must be positive (got {})", a->gemm_gflops);
      hw.flops = a->gemm_gflops * 1e9;
      nlohmann::json probe_json;
      if (a->probe) {
        // the layouts of this world that the model allows
        std::vector<int> tps;
        for (int t = 1; t <= world.size(); ++t)
          if (world.size() % t == 0 && tp_invalid_reason(m, t).empty()) tps.push_back(t);
        const ProbeResult p = probe_hardware(world, m, tps, a->ranks_per_host);
        apply_probe(hw, p);
        hw.hosts = p.hosts;
        hw.ranks_per_host = p.ranks_per_host;
        probe_json = {{"hosts", p.hosts},           {"ranks_per_host", p.ranks_per_host},
                      {"step_flops", p.step_flops}, {"gemm_flops_by_tp", p.gemm_flops_by_tp},
                      {"intra_bw", p.intra_bw},     {"intra_latency", p.intra_latency},
                      {"inter_bw", p.inter_bw},     {"inter_latency", p.inter_latency},
                      {"tp_bw_by_tp", p.tp_bw_by_tp}, {"dp_bw_by_tp", p.dp_bw_by_tp}};
      }
      if (a->hosts > 0) hw.hosts = a->hosts;
      if (a->ranks_per_host > 0) hw.ranks_per_host = a->ranks_per_host;
      TP_CHECK(a->probe || (a->hosts > 0 && a->ranks_per_host > 0), ConfigError,
               "give --hosts and --ranks-per-host (or --probe under mpirun to take them from MPI)");

      const std::vector<LayoutPlan> plans = plan_layouts(m, hw);
      const int best = recommend(plans);
      if (a->json) {
        nlohmann::json j{{"hosts", hw.hosts},
                         {"ranks_per_host", hw.ranks_per_host},
                         {"global_batch", m.global_batch},
                         {"seq", m.seq},
                         {"parameters", m.model.parameter_count()},
                         {"flops_per_s", hw.flops},
                         {"intra_bw", hw.intra_bw},
                         {"inter_bw", hw.inter_bw},
                         {"intra_latency", hw.intra_latency},
                         {"inter_latency", hw.inter_latency},
                         {"layouts", nlohmann::json::array()}};
        if (!probe_json.is_null()) j["probe"] = probe_json;
        for (const LayoutPlan& p : plans) j["layouts"].push_back(layout_json(p));
        j["recommended"] = best < 0 ? nlohmann::json(nullptr)
                                    : nlohmann::json{{"tp", plans[size_t(best)].tp}, {"dp", plans[size_t(best)].dp}};
        print_rank0(world, j.dump() + "\n");
      } else {
        std::string head = fmt::format(
            "{:.2f}M parameters, {} sequences x {} tokens per step, {} hosts x {} ranks; compute {:.1f} GFLOP/s per "
            "rank, intra-host {:.3f} GB/s, inter-host {:.3f} GB/s{}\n",
            double(m.model.parameter_count()) / 1e6, m.global_batch, m.seq, hw.hosts, hw.ranks_per_host,
            hw.flops / 1e9, hw.intra_bw / 1e9, hw.inter_bw / 1e9, a->probe ? " (probed)" : "");
        print_rank0(world, head + table(plans, best, hw));
      }
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
