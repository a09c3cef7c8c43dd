// Data-parallel gradient buckets (train/grad_buckets.hpp): one all-reduce per bucket, buckets cut at
// parameter starts, and training with buckets (started during backward, non-blocking or deferred)
// bit-identical to the per-parameter all-reduce after the whole backward, on TP x DP meshes
// (np 2: TP=1 x DP=2; np 4: TP=1 x DP=4 and TP=2 x DP=2).
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>

#include "temp_dir.hpp"
#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/train/grad_buckets.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {
namespace {

TEST(GradBuckets, OneAllReducePerBucketCutAtParameterStarts) {
  ProcessGroup world = ProcessGroup::world();
  // six "parameters" of 16 floats each; buckets of at least 40 floats end at a parameter start
  std::vector<float> arena(96), expected(96);
  for (size_t i = 0; i < arena.size(); ++i) {
    arena[i] = float(i % 13) * 0.25f + float(world.rank());
    // sum over ranks r of (base + r), divided by the size
    const int n = world.size();
    expected[i] = (float(i % 13) * 0.25f * float(n) + float(n * (n - 1) / 2)) / float(n);
  }
  const std::vector<int64_t> cuts{0, 16, 32, 48, 64, 80};
  for (AsyncMode mode : {AsyncMode::Nonblocking, AsyncMode::Deferred}) {
    std::vector<float> data = arena;
    world.set_async_mode(mode);
    GradBuckets buckets(world, data, cuts, 40 * sizeof(float));
    EXPECT_EQ(buckets.bounds(), (std::vector<int64_t>{0, 48, 96}));
    world.reset_stats();
    buckets.ready(20);  // nothing complete yet
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 0);
    buckets.ready(48);
    buckets.finish();
    EXPECT_EQ(world.stats().count(Collective::AllReduce), world.size() > 1 ? 2 : 0);
    for (size_t i = 0; i < data.size(); ++i) ASSERT_FLOAT_EQ(data[i], expected[i]) << "element " << i;
  }
  // one bucket per parameter when the size is tiny; one for everything when it is huge
  std::vector<float> data = arena;
  EXPECT_EQ(GradBuckets(world, data, cuts, 4).bucket_count(), 6u);
  EXPECT_EQ(GradBuckets(world, data, cuts, int64_t(1) << 30).bucket_count(), 1u);
}


// Every TP x DP mesh of this world with DP > 1.
std::vector<int> tp_degrees(int world_size) {
  std::vector<int> tps;
  for (int tp = 1; tp < world_size; tp *= 2)
    if (world_size % tp == 0) tps.push_back(tp);
  return tps;
}

TEST(GradBuckets, TrainingEqualsPerParameterAllReduceBitForBit) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions o;
  o.data = testing::write_corpus(world, dir, "pack my box with five dozen liquor jugs ", 5, ".\n");
  o.model.layers = 3;
  o.model.hidden = 32;
  o.model.heads = 4;
  o.seq = 16;
  o.batch = 2;
  o.grad_accum = 2;  // buckets start in the last micro-batch's backward only
  o.steps = 4;
  o.schedule.lr = 3e-3f;
  o.grad_clip = 0.5f;
  o.progress = false;
  for (int tp : tp_degrees(world.size())) {
    o.tp = tp;
    o.dp_bucket_mb = 0;
    const TrainResult reference = train(world, o);
    EXPECT_EQ(reference.dp_buckets, 0);
    // tiny buckets (one per parameter or so, many started during backward), and one 25 MB bucket
    for (double mb : {0.004, 25.0})
      for (AsyncMode mode : {AsyncMode::Nonblocking, AsyncMode::Deferred}) {
        o.dp_bucket_mb = mb;
        o.dp_async = mode;
        const TrainResult bucketed = train(world, o);
        EXPECT_GE(bucketed.dp_buckets, mb < 1 ? 10 : 1);
        if (mb > 1) {
          EXPECT_EQ(bucketed.dp_buckets, 1);
        }
        ASSERT_EQ(bucketed.history.size(), reference.history.size());
        for (size_t s = 0; s < reference.history.size(); ++s) {
          // the same sums of the same values: Open MPI reduces a message element-wise in an order
          // that depends on the ranks, not on where the message starts
          EXPECT_EQ(bucketed.history[s].loss, reference.history[s].loss)
              << "TP=" << tp << " bucket " << mb << " MB, step " << s + 1;
          EXPECT_EQ(bucketed.history[s].grad_norm, reference.history[s].grad_norm)
              << "TP=" << tp << " bucket " << mb << " MB, step " << s + 1;
        }
      }
  }
}

}  // namespace
}  // namespace tensorpar
