// Sequence parallelism with gradient accumulation: the norm and position gradients each rank
// computes from its own tokens are summed over the tensor group at the end of every backward; what
// earlier micro-batches accumulated must not be summed again (it was, multiplying their share by t).
// The loss curve and clipped gradient norms equal one process's with the same micro-batches.
#include <gtest/gtest.h>

#include <cmath>

#include "temp_dir.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {
namespace {

TEST(SequenceParallelAccumulation, EqualsOneProcessOverSeveralMicroBatches) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  for (ModelFamily family : {ModelFamily::Gpt2, ModelFamily::Llama}) {
    TrainOptions o;
    o.data = testing::write_corpus(world, dir);
    o.model.vocab_size = 0;
    o.model.family = family;
    o.model.tie_embeddings = family == ModelFamily::Gpt2;
    o.model.layers = 2;
    o.model.hidden = 32;
    o.model.heads = 4;
    o.seq = 16;
    o.batch = 2;
    o.grad_accum = 3;
    o.steps = 3;
    o.schedule.lr = 3e-3f;
    o.schedule.warmup_steps = 1;
    o.grad_clip = 0.5f;
    o.val_fraction = 0;
    o.progress = false;
    const TrainResult serial = train(self, o);
    TrainOptions sp = o;
    sp.compute.sequence_parallel = true;  // TP = every rank
    const TrainResult parallel = train(world, sp);
    ASSERT_EQ(parallel.history.size(), serial.history.size());
    for (size_t s = 0; s < serial.history.size(); ++s) {
      EXPECT_NEAR(parallel.history[s].loss, serial.history[s].loss, 1e-5 * serial.history[s].loss) << "step " << s + 1;
      EXPECT_NEAR(parallel.history[s].grad_norm, serial.history[s].grad_norm, 1e-5 * serial.history[s].grad_norm)
          << "step " << s + 1;
    }
  }
}

}  // namespace
}  // namespace tensorpar
