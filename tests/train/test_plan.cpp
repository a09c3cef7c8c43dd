// The planner's cost model (train/plan.hpp) against reality, deterministically (no timing):
// - the collectives one training step makes — calls and bytes per collective on the TP and DP groups —
//   equal what ProcessGroup::stats() records in a real step at every (TP, DP) mesh of the world,
//   GPT-2 and Llama (GQA with replicated KV heads at TP=4), plain TP, sequence parallel, full recompute;
// - the same for a ZeRO-1 step (reduce-scatter and all-gather of the gradient arena, whose size the
//   planner predicts exactly, padding included);
// - parameters per rank, parameter tensor count and weights+gradients+AdamW bytes equal the model's,
//   activation bytes equal TransformerLM::activation_bytes() (the formula of docs/memory.md plus the LM head);
// - layout enumeration, host crossing, ZeRO-1 memory, fits / does not fit and the recommendation on a
//   made-up cluster, the ring time by hand; and the size / bandwidth / duration parsers.
#include <gtest/gtest.h>

#include <tuple>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/model/memory.hpp"
#include "tensorpar/train/grad_norm.hpp"
#include "tensorpar/train/plan.hpp"
#include "tensorpar/train/zero_optimizer.hpp"

namespace tensorpar {
namespace {

ModelConfig config(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;  // padded differently at each TP degree
  c.max_seq = 16;
  c.hidden = 32;
  c.heads = 4;
  c.layers = 3;
  c.kv_heads = family == ModelFamily::Llama ? 2 : 0;  // replicated KV heads at TP=4
  c.ffn_hidden = family == ModelFamily::Llama ? 48 : 0;
  c.tie_embeddings = family == ModelFamily::Gpt2;
  return c;
}

void expect_same(const CommStats& predicted, const CommStats& recorded, const std::string& what) {
  for (Collective c : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter, Collective::Broadcast}) {
    EXPECT_EQ(predicted.count(c), recorded.count(c)) << what << " " << collective_name(c) << " calls";
    EXPECT_EQ(predicted.bytes[size_t(c)], recorded.bytes[size_t(c)]) << what << " " << collective_name(c) << " bytes";
  }
}

// (family, sequence parallel, recompute)
class PlanStep : public ::testing::TestWithParam<std::tuple<ModelFamily, bool, Recompute>> {};

TEST_P(PlanStep, PredictedCommAndMemoryEqualARealStep) {
  const auto [family, sp, recompute] = GetParam();
  ProcessGroup world = ProcessGroup::world();
  const int64_t global_batch = 4, T = 8;
  for (int tp = 1; tp <= world.size(); ++tp) {
    if (world.size() % tp != 0) continue;
    SCOPED_TRACE(fmt::format("TP={} x DP={}", tp, world.size() / tp));
    Mesh mesh(world, tp);
    ProcessGroup &tpg = mesh.tp(), &dp = mesh.dp();
    PlanModel m;
    m.model = config(family);
    m.global_batch = global_batch;
    m.seq = T;
    m.compute.sequence_parallel = sp;
    m.compute.recompute = recompute;
    const int64_t B = global_batch / dp.size();
    TransformerLM model(tpg, m.model, B, T, 7, m.compute);
    std::vector<int32_t> x(size_t(B * T)), y(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = int32_t((i * 37 + 11 * size_t(dp.rank())) % 300), y[i] = int32_t((i * 53 + 5) % 300);

    // one step as train/trainer.cpp takes it: forward, backward, DP average of each gradient and of
    // the loss, global-norm clipping
    tpg.reset_stats();
    dp.reset_stats();
    model.zero_grad();
    double loss = model.forward(x.data(), y.data(), B, T);
    model.backward(x.data(), y.data(), B, T);
    if (dp.size() > 1) {
      for (Parameter* p : model.parameters()) dp.all_reduce(p->grad.span());
      dp.all_reduce(std::span<double>(&loss, 1));
    }
    clip_grad_norm(tpg, model.parameters(), 1.0);

    CommStats tp_comm, dp_comm, kv_comm;
    predict_step_comm(m, tp, dp.size(), B, tp_comm, dp_comm, kv_comm);
    expect_same(tp_comm, tpg.stats(), "TP group");
    expect_same(dp_comm, dp.stats(), "DP group");
    EXPECT_EQ(kv_comm.count(Collective::AllReduce), m.model.kv_heads_or_heads() < tp ? m.model.layers : 0);

    // memory: exactly the parameters the model holds, and its activation buffers
    int64_t elements = 0;
    for (const Parameter* p : model.parameters()) elements += p->value.numel();
    EXPECT_EQ(parameter_elements_per_rank(m.model, tp), elements);
    EXPECT_EQ(parameter_tensor_count(m.model), int64_t(model.parameters().size()));
    PlanHardware hw;
    hw.hosts = 1;
    hw.ranks_per_host = world.size();
    const std::vector<LayoutPlan> plans = plan_layouts(m, hw);
    const auto it = std::find_if(plans.begin(), plans.end(), [&](const LayoutPlan& p) { return p.tp == tp; });
    ASSERT_NE(it, plans.end());
    ASSERT_EQ(it->invalid, "");
    EXPECT_DOUBLE_EQ(it->memory.weights + it->memory.gradients + it->memory.optimizer,
                     double(parameter_bytes_per_rank(model.parameters())));
    EXPECT_DOUBLE_EQ(activation_bytes_formula(m.model, B, T, tp, m.compute), double(model.activation_bytes()));
    expect_same(it->tp_comm, tp_comm, "plan_layouts TP");

    // ZeRO-1 (train/zero_optimizer.hpp, one whole-arena bucket): a step as the trainer takes it
    EXPECT_EQ(grad_arena_elements_per_rank(m.model, tp), int64_t(model.grad_arena().size()));
    if (dp.size() > 1) {
      PlanModel z = m;
      z.zero1 = true;
      ZeroOptimizer zero(dp, tpg, model, AdamWConfig{}, 0);
      dp.reset_stats();
      model.zero_grad();
      loss = model.forward(x.data(), y.data(), B, T);
      model.backward(x.data(), y.data(), B, T, 1.0f, [&zero](int64_t n) { zero.ready(n); });
      zero.finish_gradients();
      dp.all_reduce(std::span<double>(&loss, 1));
      zero.clip_grad_norm(1.0);
      zero.step(1e-3f);
      predict_step_comm(z, tp, dp.size(), B, tp_comm, dp_comm, kv_comm);
      expect_same(dp_comm, dp.stats(), "DP group, ZeRO-1");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, PlanStep,
                         ::testing::Combine(::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama), ::testing::Bool(),
                                            ::testing::Values(Recompute::None, Recompute::Full)));

// A GPT-2 with 12 heads on 2 hosts x 4 ranks: TP 1, 2, 4 valid (8 does not divide 12 heads).
PlanModel gpt(int64_t global_batch) {
  PlanModel m;
  m.model.hidden = 768;
  m.model.heads = 12;
  m.model.layers = 12;
  m.model.vocab_size = 50257;
  m.model.max_seq = 1024;
  m.global_batch = global_batch;
  m.seq = 1024;
  return m;
}

TEST(Plan, EnumeratesLayoutsPlacesThemAndChecksMemory) {
  PlanHardware hw;
  hw.hosts = 2;
  hw.ranks_per_host = 4;
  hw.overhead_per_rank = 0;
  std::vector<LayoutPlan> plans = plan_layouts(gpt(8), hw);
  ASSERT_EQ(plans.size(), 4u);
  EXPECT_EQ(plans[0].tp, 1);
  EXPECT_EQ(plans[0].dp, 8);
  EXPECT_EQ(plans[3].tp, 8);
  EXPECT_NE(plans[3].invalid.find("12 attention heads"), std::string::npos) << plans[3].invalid;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(plans[size_t(i)].invalid, "") << plans[size_t(i)].invalid;
  // TP <= 4 ranks per host stays inside a host; DP always crosses
  EXPECT_FALSE(plans[2].tp_crosses_hosts);
  EXPECT_TRUE(plans[2].dp_crosses_hosts);
  EXPECT_EQ(plans[2].micro_batch, 4);
  // 8 sequences do not split over 16 replicas
  hw.ranks_per_host = 8;
  plans = plan_layouts(gpt(8), hw);
  EXPECT_NE(plans[0].invalid.find("does not split over 16"), std::string::npos) << plans[0].invalid;
  // TP=16 spans both hosts (and 12 heads refuse it anyway)
  hw.ranks_per_host = 4;

  // ZeRO-1 divides only the optimizer state, by D
  PlanModel z = gpt(8);
  z.zero1 = true;
  const std::vector<LayoutPlan> plain = plan_layouts(gpt(8), hw), zero = plan_layouts(z, hw);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(zero[i].memory.optimizer, plain[i].memory.optimizer / plain[i].dp);
    EXPECT_DOUBLE_EQ(zero[i].memory.weights, plain[i].memory.weights);
    EXPECT_DOUBLE_EQ(plain[i].memory.optimizer, 2 * plain[i].memory.weights);  // m and v in f32
  }

  // memory per host between what TP=2 and TP=1 need: TP=1 does not fit, the recommendation is not TP=1
  const double limit = 4 * (plain[0].memory.total() + plain[1].memory.total()) / 2;
  ASSERT_LT(plain[1].memory.total(), plain[0].memory.total());
  hw.memory_per_host = limit;
  plans = plan_layouts(gpt(8), hw);
  EXPECT_FALSE(plans[0].fits);
  EXPECT_TRUE(plans[1].fits);
  const int best = recommend(plans);
  ASSERT_GE(best, 1);
  EXPECT_TRUE(plans[size_t(best)].fits);
  hw.memory_per_host = 1;  // nothing fits
  EXPECT_EQ(recommend(plan_layouts(gpt(8), hw)), -1);
}

TEST(Plan, StepTimeIsComputePlusRingCollectives) {
  PlanHardware hw;
  hw.hosts = 2;
  hw.ranks_per_host = 2;
  hw.flops = 1e11;
  hw.intra_bw = 8e9;
  hw.inter_bw = 1e8;
  hw.intra_latency = 1e-6;
  hw.inter_latency = 1e-4;
  PlanModel m = gpt(4);
  const std::vector<LayoutPlan> plans = plan_layouts(m, hw);
  ASSERT_EQ(plans.size(), 3u);
  // TP=2 x DP=2: the TP group inside a host, the DP pairs {0,2} and {1,3} share each host's link
  const LayoutPlan& p = plans[1];
  EXPECT_NEAR(p.compute_s, p.flops_per_rank / 1e11, 1e-12);
  const double tp_ar = double(p.tp_comm.bytes[size_t(Collective::AllReduce)]);
  EXPECT_NEAR(p.tp_comm_s, tp_ar / 8e9 + double(p.tp_comm.count(Collective::AllReduce)) * 2 * 1e-6, 1e-9);
  const double dp_ar = double(p.dp_comm.bytes[size_t(Collective::AllReduce)]);
  EXPECT_NEAR(p.dp_comm_s, dp_ar / (1e8 / 2) + double(p.dp_comm.count(Collective::AllReduce)) * 2 * 1e-4, 1e-9);
  EXPECT_NEAR(p.step_s, p.compute_s + p.tp_comm_s + p.dp_comm_s, 1e-12);
  EXPECT_NEAR(p.tokens_per_s, 4 * 1024 / p.step_s, 1e-6);
  // TP=4 crosses the hosts: ring over 4 at the inter-host bandwidth, one group per link
  const LayoutPlan& q = plans[2];
  EXPECT_TRUE(q.tp_crosses_hosts);
  const double q_ar = double(q.tp_comm.bytes[size_t(Collective::AllReduce)]);
  EXPECT_NEAR(q.tp_comm_s, 1.5 * q_ar / 1e8 + double(q.tp_comm.count(Collective::AllReduce)) * 6 * 1e-4, 1e-9);
  EXPECT_EQ(q.dp_comm_s, 0);
  // one rank of TP=1 x DP=4 and of TP=4 x DP=1 does a quarter of the step each (padding aside)
  EXPECT_NEAR(plans[0].flops_per_rank / plans[2].flops_per_rank, 1.0, 0.01);
}

TEST(Plan, ParsesSizesBandwidthsAndDurations) {
  EXPECT_DOUBLE_EQ(parse_bytes("24GiB", "--m"), 24.0 * (1ull << 30));
  EXPECT_DOUBLE_EQ(parse_bytes("512MB", "--m"), 512e6);
  EXPECT_DOUBLE_EQ(parse_bytes("1e9", "--m"), 1e9);
  EXPECT_DOUBLE_EQ(parse_bandwidth("10GB/s", "--b"), 10e9);
  EXPECT_DOUBLE_EQ(parse_bandwidth("1gbit", "--b"), 125e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("100mbit", "--b"), 12.5e6);
  EXPECT_DOUBLE_EQ(parse_bandwidth("800MiB/s", "--b"), 800.0 * (1 << 20));
  EXPECT_DOUBLE_EQ(parse_duration("0.2ms", "--l"), 2e-4);
  EXPECT_DOUBLE_EQ(parse_duration("50us", "--l"), 50e-6);
  EXPECT_THROW(parse_bytes("lots", "--m"), ConfigError);
  EXPECT_THROW(parse_bandwidth("1 gigabit", "--b"), ConfigError);
  EXPECT_THROW(parse_bandwidth("0GB/s", "--b"), ConfigError);
  EXPECT_THROW(parse_duration("-1ms", "--l"), ConfigError);
  try {
    parse_bandwidth("fast", "--inter-bw");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--inter-bw 'fast' is not a bandwidth"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tensorpar
