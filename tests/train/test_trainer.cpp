// Training end to end through train(): the same seed gives the same loss curve and the same
// (clipped) gradient norms at TP=1 and at the world's TP degree, and the loss falls on text.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "temp_dir.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {
namespace {

using testing::write_corpus;

TrainOptions options(const std::string& data) {
  TrainOptions o;
  o.data = data;
  o.model.vocab_size = 0;
  o.model.layers = 2;
  o.model.hidden = 24;
  o.model.heads = 12;
  o.seq = 16;
  o.batch = 4;
  o.steps = 20;
  o.schedule.lr = 3e-3f;
  o.schedule.warmup_steps = 3;
  o.grad_clip = 0.5f;  // small enough to clip: the clipped path must agree across degrees too
  o.val_fraction = 0.1;
  o.progress = false;
  return o;
}

TEST(Trainer, SameLossCurveAndGradNormAtEveryTpDegree) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  const TrainOptions o = options(write_corpus(world, dir));
  const TrainResult serial = train(self, o);
  const TrainResult parallel = train(world, o);
  ASSERT_EQ(serial.history.size(), 20u);
  ASSERT_EQ(parallel.history.size(), 20u);
  for (size_t s = 0; s < serial.history.size(); ++s) {
    EXPECT_NEAR(parallel.history[s].loss, serial.history[s].loss, 1e-5 * std::fabs(serial.history[s].loss))
        << "step " << s + 1;
    EXPECT_NEAR(parallel.history[s].grad_norm, serial.history[s].grad_norm, 1e-5 * serial.history[s].grad_norm)
        << "step " << s + 1;
  }
  EXPECT_GT(serial.history[0].grad_norm, 0.5) << "the clip threshold should be active";
  EXPECT_LT(serial.history.back().loss, serial.history.front().loss - 1.0) << "the loss should fall on text";
  EXPECT_GT(parallel.val_loss, 0);
  EXPECT_NEAR(parallel.val_loss, serial.val_loss, 1e-5 * serial.val_loss);
}

TEST(Trainer, GradientAccumulationEqualsOneBigBatch) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions big = options(write_corpus(world, dir));
  big.steps = 3;
  big.grad_clip = 0;
  TrainOptions accumulated = big;
  big.batch = 4;
  accumulated.batch = 2;
  accumulated.grad_accum = 2;
  // two micro-batches of 2 rows read the same rows as one batch of 4 (the loader advances by B*T)
  const TrainResult a = train(world, big), b = train(world, accumulated);
  for (size_t s = 0; s < a.history.size(); ++s) {
    EXPECT_NEAR(b.history[s].loss, a.history[s].loss, 2e-5 * a.history[s].loss) << "step " << s + 1;
    EXPECT_NEAR(b.history[s].grad_norm, a.history[s].grad_norm, 2e-5 * a.history[s].grad_norm) << "step " << s + 1;
  }
}

TEST(Trainer, DataParallelReplicasEqualOneProcessWithTheirBatchesTogether) {
  // DP rank d reads rows [d*B, (d+1)*B) of what one process with batch B*dp reads: averaging the
  // replicas' gradients and losses must give the same curve. At 4 ranks: a TP=2 x DP=2 mesh.
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  if (world.size() == 1) return;  // no data parallelism with one rank
  testing::SharedTempDir dir(world);
  TrainOptions mesh = options(write_corpus(world, dir));
  mesh.steps = 5;
  mesh.batch = 2;
  mesh.tp = world.size() >= 4 ? 2 : 1;
  const int dp = world.size() / mesh.tp;
  TrainOptions single = mesh;
  single.tp = 1;
  single.batch = 2 * dp;
  const TrainResult a = train(world, mesh), b = train(self, single);
  for (size_t s = 0; s < b.history.size(); ++s) {
    EXPECT_NEAR(a.history[s].loss, b.history[s].loss, 1e-5 * b.history[s].loss) << "step " << s + 1;
    EXPECT_NEAR(a.history[s].grad_norm, b.history[s].grad_norm, 1e-5 * b.history[s].grad_norm) << "step " << s + 1;
  }
}

TEST(Trainer, SequenceLongerThanTheDataIsAClearError) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir));
  o.seq = 200;
  o.model.max_seq = 200;
  o.batch = 1000;
  try {
    train(world, o);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("tokens but a batch of"), std::string::npos) << e.what();
  }
}

TEST(Trainer, MissingDataFileIsTheSameIoErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  TrainOptions o = options("/nonexistent/tensorpar/data.bin");
  try {
    train(world, o);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tensorpar/data.bin"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tensorpar
