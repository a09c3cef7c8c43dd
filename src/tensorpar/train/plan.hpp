// The planner's cost model (`tensorpar plan`, docs/scaling.md "Planner"): for a model, a global batch
// and a cluster of H hosts x R ranks, every valid (TP, DP) layout with its predicted memory per rank
// and step time. Nothing here runs a model: the collective pattern is written out from the code
// (TransformerLM's header says what it communicates; the trainer all-reduces each gradient over DP),
// and tests/train/test_plan.cpp checks the predicted calls and bytes against what ProcessGroup::stats()
// records in a real step, and the memory against what the model measures it holds.
//
// Step time = compute + communication, not overlapped (today's trainer waits for each collective):
//   compute = model FLOPs per rank / FLOP rate (given, or measured by a probe of this machine);
//   each collective of S bytes (as ProcessGroup counts them) over p ranks, ring algorithm:
//     all-reduce 2(p-1)/p S / B + 2(p-1) a,   all-gather / reduce-scatter (p-1)/p S / B + (p-1) a,
//   B and a the intra-host bandwidth and latency when the group lies in one host, else the inter-host
//   ones, B divided by the groups that share one host's link at the same time (R / the group's ranks
//   per host). Ranks are placed as comm/mesh.hpp does: TP groups are consecutive ranks, hosts hold
//   consecutive ranks, so TP <= R stays inside a host.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {

// What to train: the model, sequences per optimizer step over the whole mesh, and how.
struct PlanModel {
  ModelConfig model;
  int64_t global_batch = 1, seq = 1;
  TransformerOptions compute;
  bool zero1 = false;  // ZeRO-1: AdamW m and v sharded over the data-parallel group (optimizer state / D)
};

// Where: the cluster and its measured or stated speeds. Bandwidths in bytes/s, latencies in s.
struct PlanHardware {
  int hosts = 1, ranks_per_host = 1;
  double memory_per_host = 0;             // bytes; 0 = unlimited
  double overhead_per_rank = 256.0 * (1 << 20);  // process, MPI and library memory outside the model
  double intra_bw = 10e9, inter_bw = 1.25e9;
  double intra_latency = 5e-6, inter_latency = 50e-6;
  // Compute rate per rank in FLOP/s of the model's training step, per TP degree (index t; 0 = not
  // measured for that t, use `flops`). A probe measures it by timing a real step; given, it is the GEMM rate.
  double flops = 10e9;
  std::vector<double> flops_by_tp;
  double flops_for(int tp) const;
  // Bus bandwidth of the TP and of the DP groups' all-reduces per TP degree (index t), measured by a
  // probe on the layout's own groups, all at once, at the step's message sizes; 0 = derive it from
  // intra_bw / inter_bw and the placement as above.
  std::vector<double> tp_bw_by_tp, dp_bw_by_tp;
};

// Per rank, bytes.
struct PlanMemory {
  double weights = 0, gradients = 0, optimizer = 0, activations = 0, buffers = 0, overhead = 0;
  double total() const { return weights + gradients + optimizer + activations + buffers + overhead; }
};

struct LayoutPlan {
  int tp = 1, dp = 1;
  int64_t micro_batch = 0;     // sequences per data-parallel replica
  std::string invalid;         // why this layout cannot run ("" = valid)
  bool tp_crosses_hosts = false, dp_crosses_hosts = false;
  int64_t parameters_per_rank = 0;  // elements (padding included)
  PlanMemory memory;
  bool fits = true;
  // per step per rank, counted as ProcessGroup::stats() counts them: the TP group's, the DP group's,
  // and the KV-head groups' (replicated GQA heads' gradient sums)
  CommStats tp_comm, dp_comm, kv_comm;
  double flops_per_rank = 0;  // model FLOPs of one step on one rank
  double compute_s = 0, tp_comm_s = 0, dp_comm_s = 0, step_s = 0, tokens_per_s = 0;
  double comm_share() const { return step_s > 0 ? (tp_comm_s + dp_comm_s) / step_s : 0; }
};

// The collectives one training step (forward, backward, DP gradient average, clip_grad_norm) makes on
// one rank of a (tp, dp) mesh with `micro_batch` sequences per replica.
void predict_step_comm(const PlanModel& m, int tp, int dp, int64_t micro_batch, CommStats& tp_comm,
                       CommStats& dp_comm, CommStats& kv_comm);
// Elements of parameters one rank holds at TP degree tp (vocabulary padding included), and how many
// Parameter objects (one DP all-reduce each).
int64_t parameter_elements_per_rank(const ModelConfig& c, int tp);
int64_t parameter_tensor_count(const ModelConfig& c);
// Elements of the gradient arena at TP degree tp: every parameter rounded up to 64 bytes
// (TransformerLM::grad_arena), what ZeRO-1 reduce-scatters and all-gathers.
int64_t grad_arena_elements_per_rank(const ModelConfig& c, int tp);
// Activation bytes a TransformerLM holds from forward to backward (TransformerLM::activation_bytes):
// the layers by model/memory.hpp's formula, plus the final norm, its input and output and the LM head.
double activation_bytes_formula(const ModelConfig& c, int64_t batch, int64_t seq, int tp,
                                const TransformerOptions& o);
// Model FLOPs of one training step on one rank: GEMMs (2 per multiply-add) forward, twice that
// backward, the causal attention scores and mixing, and what recomputation runs again.
double step_flops_per_rank(const ModelConfig& c, int64_t batch, int64_t seq, int tp, const TransformerOptions& o);

// Why `tp` ranks cannot split the model ("" if they can), the rules of ModelConfig::validate.
std::string tp_invalid_reason(const PlanModel& m, int tp);

// Every (TP, DP) with TP x DP = hosts x ranks_per_host, TP ascending; invalid ones say why.
std::vector<LayoutPlan> plan_layouts(const PlanModel& m, const PlanHardware& hw);
// The fastest valid layout that fits (index into plans), or -1.
int recommend(const std::vector<LayoutPlan>& plans);

// "24GiB", "512MB", "1e9" -> bytes; "10GB/s", "1gbit", "100mbit", "800MiB/s" -> bytes/s;
// "0.2ms", "50us", "1e-5" (seconds) -> seconds. ConfigError naming the option otherwise.
double parse_bytes(const std::string& text, const std::string& option);
double parse_bandwidth(const std::string& text, const std::string& option);
double parse_duration(const std::string& text, const std::string& option);

}  // namespace tensorpar
