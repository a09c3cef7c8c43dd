// `tensorpar plan --probe`: a short measurement of this machine for the planner (train/plan.hpp).
// Compute: one real training step (forward, backward, AdamW) of the model on each rank alone, all
// ranks at once (so they share the cores as training does), gives the model FLOP rate; the kernels'
// GEMM at each TP degree's per-rank shapes scales it to that degree. Communication: all-reduces among
// the ranks of one host, and among one rank per host (MPI_COMM_TYPE_SHARED, comm/host.hpp), give the
// intra- and inter-host bandwidth and latency. Collective over the world.
#pragma once
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/train/plan.hpp"

namespace tensorpar {

struct ProbeResult {
  int hosts = 1, ranks_per_host = 1;  // as MPI sees them
  double step_flops = 0;              // FLOP/s per rank of a real TP=1 step
  std::vector<double> gemm_flops_by_tp;  // FLOP/s per rank of the GEMMs at TP=t's shapes (index t; 0 = not probed)
  double intra_bw = 0, intra_latency = 0;  // 0: one rank per host, not measured
  double inter_bw = 0, inter_latency = 0;  // 0: one host, not measured
  // bus bandwidth of each TP degree's TP and DP groups (comm/mesh.hpp), all groups at once, at the
  // step's sizes: a TP all-reduce of (tokens, hidden), the DP all-reduce of all gradients (0 = size 1)
  std::vector<double> tp_bw_by_tp, dp_bw_by_tp;
};

// Probes the TP degrees in `tps` (each must be valid for the model). ranks_per_host > 0: hosts hold
// consecutive ranks, that many each; 0: MPI says which ranks share a host (comm/host.hpp).
ProbeResult probe_hardware(ProcessGroup& world, const PlanModel& m, const std::vector<int>& tps,
                           int ranks_per_host = 0);

// hw with the probe's measurements in place of its stated ones (those the probe could not measure stay).
void apply_probe(PlanHardware& hw, const ProbeResult& probe);

}  // namespace tensorpar
