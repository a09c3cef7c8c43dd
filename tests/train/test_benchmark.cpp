// bench's scaling overrides (train/benchmark.hpp): --seq keeps the preset's tokens per step, --hidden
// keeps 64 per head, the result names the shape run, and bad values are ConfigErrors on every rank.
// A tiny shape (gpt-bench's 4 layers at width 256, byte vocabulary): one timed step.
#include <gtest/gtest.h>

#include "tensorpar/train/benchmark.hpp"

namespace tensorpar {
namespace {

TEST(Benchmark, SeqOverrideKeepsTokensPerStepAndHiddenKeepsHeadSize) {
  ProcessGroup world = ProcessGroup::world();
  BenchOptions o;
  o.steps = 1;
  o.warmup_steps = 0;
  o.seq = 32;
  o.hidden = 256;  // 4 heads: splits over 1, 2 and 4 ranks
  const BenchResult r = run_benchmark(world, o);
  EXPECT_EQ(r.seq, 32);
  EXPECT_EQ(r.batch, 8 * 256 / 32) << "gpt-bench's 2048 tokens per step";
  EXPECT_EQ(r.hidden, 256);
  ModelConfig c = bench_preset("gpt-bench").model;
  c.hidden = 256;
  c.heads = 4;
  c.max_seq = 32;
  EXPECT_EQ(r.parameters, c.parameter_count());
  EXPECT_GT(r.tokens_per_s, 0.0);
  EXPECT_TRUE(std::isfinite(r.loss) && r.loss > 0.0f) << r.loss;
}

TEST(Benchmark, BadOverridesAreConfigErrors) {
  ProcessGroup world = ProcessGroup::world();
  BenchOptions o;
  o.seq = 300;  // does not divide 2048
  EXPECT_THROW(run_benchmark(world, o), ConfigError);
  o.seq = 0;
  o.hidden = 100;  // not 64 per head
  EXPECT_THROW(run_benchmark(world, o), ConfigError);
}

}  // namespace
}  // namespace tensorpar
