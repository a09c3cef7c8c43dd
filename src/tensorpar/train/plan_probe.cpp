#include "tensorpar/train/plan_probe.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

#include "tensorpar/comm/host.hpp"
#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/core/rng.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"

namespace tensorpar {

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of `run` over `reps` calls after one warm-up.
template <class F>
double time_median(int reps, F&& run) {
  run();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    run();
    t.push_back(now() - t0);
  }
  return median(t);
}

// FLOP/s of the four GEMMs of a block's forward at TP=tp's per-rank shapes, N tokens.
double gemm_rate(const ModelConfig& c, int tp, int64_t N) {
  const int64_t h = c.hidden, hd = c.head_dim(), f = c.ffn_or_default() / tp;
  const int64_t kv = c.kv_heads_or_heads() >= tp ? c.kv_heads_or_heads() / tp : 1;
  const int64_t qkv = (c.heads / tp + 2 * kv) * hd, gate = c.family == ModelFamily::Gpt2 ? 1 : 2;
  const int64_t shapes[4][2] = {{h, qkv}, {h / tp, h}, {h, gate * f}, {f, h}};  // (in, out)
  std::vector<float> x(size_t(N * std::max(h, f)), 0.01f), w(size_t(std::max(h, gate * f) * std::max(h, f)), 0.02f),
      y(size_t(N * std::max({h, qkv, gate * f})));
  double flops = 0;
  for (const auto& s : shapes) flops += 2.0 * double(N) * double(s[0] * s[1]);
  const double seconds = time_median(3, [&] {
    for (const auto& s : shapes)
      gemm(Trans::No, Trans::Yes, N, s[1], s[0], 1.0f, x.data(), s[0], w.data(), s[0], 0.0f, y.data(), s[1]);
  });
  return flops / seconds;
}

// Bus bandwidth (bytes/s) and per-step latency (s) of all-reduces over `group`.
void all_reduce_speed(ProcessGroup& group, double& bw, double& latency) {
  const int p = group.size();
  std::vector<float> big(size_t(1) << 20);  // 4 MiB
  const double t_big = time_median(3, [&] { group.all_reduce(std::span<float>(big)); });
  std::vector<float> small(2);
  const double t_small = time_median(3, [&] {
    for (int i = 0; i < 20; ++i) group.all_reduce(std::span<float>(small));
  }) / 20;
  bw = 2.0 * (p - 1) / p * double(big.size() * sizeof(float)) / t_big;
  latency = t_small / (2.0 * (p - 1));
}

}  // namespace

ProbeResult probe_hardware(ProcessGroup& world, const PlanModel& m, const std::vector<int>& tps,
                           int ranks_per_host) {
  TP_CHECK(ranks_per_host <= 0 || world.size() % ranks_per_host == 0, ConfigError,
           "--ranks-per-host {} does not divide the {} ranks of this run", ranks_per_host, world.size());
  ProbeResult r;
  ProcessGroup host = split_by_host(world, ranks_per_host);
  ProcessGroup across = world.split(host.rank(), world.rank(), "across-hosts");  // one rank per host, by local rank
  double shape[2] = {double(host.size()), host.rank() == 0 ? double(across.size()) : 0};
  world.all_reduce(std::span<double>(shape, 2), {ReduceOp::Max});
  r.ranks_per_host = int(shape[0]);
  r.hosts = int(shape[1]);

  // compute: every rank alone, all at once, at the micro-batch of the most data-parallel layout
  const ModelConfig& c = m.model;
  const int64_t b = std::max<int64_t>(1, m.global_batch / world.size()), T = m.seq;
  {
    ProcessGroup self = ProcessGroup::self();
    TransformerLM model(self, c, b, T, 1, m.compute);
    AdamW optimizer(model.parameters(), {});
    std::vector<int32_t> x(size_t(b * T)), y(x.size());
    const PhiloxKey key = philox_key(uint64_t(world.rank()), "plan probe tokens");
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = int32_t(philox_uniform(key, 2 * i) * float(c.vocab_size));
      y[i] = int32_t(philox_uniform(key, 2 * i + 1) * float(c.vocab_size));
    }
    world.barrier();
    const double seconds = time_median(3, [&] {
      model.zero_grad();
      model.forward(x.data(), y.data(), b, T);
      model.backward(x.data(), y.data(), b, T);
      optimizer.step(1e-4f);
    });
    double rate = step_flops_per_rank(c, b, T, 1, m.compute) / seconds;
    world.all_reduce(std::span<double>(&rate, 1));
    r.step_flops = rate / world.size();
  }
  for (int tp : tps) {
    if (size_t(tp) >= r.gemm_flops_by_tp.size()) r.gemm_flops_by_tp.resize(size_t(tp) + 1, 0);
    const int64_t tokens = m.global_batch / (world.size() / tp) * T;
    world.barrier();
    double rate = gemm_rate(c, tp, std::max<int64_t>(1, tokens));
    world.all_reduce(std::span<double>(&rate, 1));
    r.gemm_flops_by_tp[size_t(tp)] = rate / world.size();
  }

  // communication: inside each host (all hosts at once), then one rank per host
  double speed[4] = {0, 0, 0, 0};
  world.barrier();
  if (host.size() > 1) all_reduce_speed(host, speed[0], speed[1]);
  world.barrier();
  if (host.rank() == 0 && across.size() > 1) all_reduce_speed(across, speed[2], speed[3]);
  world.barrier();
  // the slowest host's view: the lowest bandwidth, the highest latency
  // (ranks that measured nothing offer -inf, so the maximum of -bandwidth is the slowest measured one)
  const double none = -std::numeric_limits<double>::infinity();
  double worst[4] = {speed[0] > 0 ? -speed[0] : none, speed[1], speed[2] > 0 ? -speed[2] : none, speed[3]};
  world.all_reduce(std::span<double>(worst, 4), {ReduceOp::Max});
  if (r.ranks_per_host > 1) r.intra_bw = -worst[0], r.intra_latency = worst[1];
  if (r.hosts > 1) r.inter_bw = -worst[2], r.inter_latency = worst[3];

  // each layout's own groups, every group at once as in training, at the sizes of one step's messages
  // (the ring over one pair's bandwidth did not describe Open MPI's 4-rank all-reduce across hosts)
  for (int tp : tps) {
    if (size_t(tp) >= r.tp_bw_by_tp.size()) r.tp_bw_by_tp.resize(size_t(tp) + 1, 0), r.dp_bw_by_tp.resize(size_t(tp) + 1, 0);
    Mesh mesh(world, tp);
    const int64_t tokens = m.global_batch / mesh.dp_size() * T;
    double seconds[2] = {0, 0};
    std::vector<float> act(size_t(std::max<int64_t>(1, tokens * c.hidden)));
    std::vector<float> grads(size_t(parameter_elements_per_rank(c, tp)));
    world.barrier();
    if (tp > 1) seconds[0] = time_median(3, [&] { mesh.tp().all_reduce(std::span<float>(act)); });
    world.barrier();
    if (mesh.dp_size() > 1) seconds[1] = time_median(3, [&] { mesh.dp().all_reduce(std::span<float>(grads)); });
    world.all_reduce(std::span<double>(seconds, 2), {ReduceOp::Max});
    const int d = mesh.dp_size();
    if (tp > 1) r.tp_bw_by_tp[size_t(tp)] = 2.0 * (tp - 1) / tp * double(act.size() * sizeof(float)) / seconds[0];
    if (d > 1) r.dp_bw_by_tp[size_t(tp)] = 2.0 * (d - 1) / d * double(grads.size() * sizeof(float)) / seconds[1];
  }
  return r;
}

void apply_probe(PlanHardware& hw, const ProbeResult& p) {
  hw.flops = p.step_flops;
  hw.flops_by_tp.assign(p.gemm_flops_by_tp.size(), 0);
  const double base = p.gemm_flops_by_tp.size() > 1 ? p.gemm_flops_by_tp[1] : 0;
  for (size_t t = 1; t < p.gemm_flops_by_tp.size(); ++t)
    if (base > 0 && p.gemm_flops_by_tp[t] > 0) hw.flops_by_tp[t] = p.step_flops * p.gemm_flops_by_tp[t] / base;
  if (p.intra_bw > 0) hw.intra_bw = p.intra_bw, hw.intra_latency = p.intra_latency;
  if (p.inter_bw > 0) hw.inter_bw = p.inter_bw, hw.inter_latency = p.inter_latency;
  hw.tp_bw_by_tp = p.tp_bw_by_tp;
  hw.dp_bw_by_tp = p.dp_bw_by_tp;
}

}  // namespace tensorpar
