// Pipeline-parallel training through train() against the single-process run with the same global
// batch, in the same test: the loss and gradient norm of every step, and every weight after the last
// step (read back from the Hugging Face file the pipeline saved, which so also proves that each stage
// writes its own tensors into the one file). GPT-2 (tied embeddings: the embedding group's gradient
// sum) and Llama (untied head), under GPipe and 1F1B, whose numbers must be the same; 1F1B's
// micro-batches in flight per stage asserted. Layouts (T, P, D) per world size: 2 ranks (1,2,1);
// 4 ranks (2,2,1), (1,4,1), (1,2,2), and (2,2,1) with sequence parallelism. Training checkpoints written by a pipeline resume at another layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "temp_dir.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {
namespace {

using testing::write_corpus;

struct Layout {
  int t, p, d;
  bool sequence_parallel = false;  // the stages send only their 1/t of the residual stream
};

std::vector<Layout> layouts(int world) {
  if (world == 2) return {{1, 2, 1}};
  if (world == 4) return {{2, 2, 1}, {1, 4, 1}, {1, 2, 2}, {2, 2, 1, true}};
  return {};
}

TrainOptions options(const std::string& data, ModelFamily family) {
  TrainOptions o;
  o.data = data;
  o.model.vocab_size = 0;
  o.model.family = family;
  if (family == ModelFamily::Llama) {
    o.model.tie_embeddings = false;
    o.model.kv_heads = 2;  // grouped-query attention across the stages too
  }
  o.model.layers = 5;  // uneven over 2 and 4 stages: 3+2, 2+1+1+1
  o.model.hidden = 32;
  o.model.heads = 4;
  o.seq = 16;
  o.batch = 2;
  o.grad_accum = 4;  // micro-batches: more than 2 stages, as many as 4
  o.steps = 3;
  o.schedule.lr = 3e-3f;
  o.schedule.warmup_steps = 1;
  o.grad_clip = 0.5f;  // active: the norm must be global over the stages
  // AdamW divides each gradient by its own running RMS, so an element whose gradient is near zero moves
  // by up to lr whatever its size, and a reduction-order difference of 1e-7 in it (another TP split,
  // or -O0 without FMA contraction) became a 1.25e-5 weight difference under the sanitizer build. An
  // eps above those tiny gradients keeps their update proportional to them: the weights then differ by
  // rounding only, and the 1e-5 comparison below is an error bound rather than a lucky draw.
  o.adamw.eps = 1e-4f;
  o.val_fraction = 0.1;
  o.val_batches = 2;
  o.dp_bucket_mb = 0.001;  // several DP buckets per stage
  o.progress = false;
  return o;
}

// Every tensor of the file at `b` equals the one at `a` to a relative 1e-5 (absolute below 1).
void expect_same_weights(const std::string& a, const std::string& b, const std::string& where) {
  const io::SafetensorsFile fa = io::SafetensorsFile::open(a), fb = io::SafetensorsFile::open(b);
  ASSERT_EQ(fa.names(), fb.names()) << where;
  for (const std::string& name : fa.names()) {
    const auto& ia = fa.info(name);
    ASSERT_EQ(ia.shape, fb.info(name).shape) << where << " " << name;
    int64_t n = 1;
    for (int64_t d : ia.shape) n *= d;
    std::vector<float> va(static_cast<size_t>(n)), vb(static_cast<size_t>(n));
    std::memcpy(va.data(), fa.data(name), va.size() * sizeof(float));
    std::memcpy(vb.data(), fb.data(name), vb.size() * sizeof(float));
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < n; ++i) {
      const double err = std::fabs(double(va[size_t(i)]) - vb[size_t(i)]) / std::max(1.0, std::fabs(double(va[size_t(i)])));
      if (err > worst) worst = err, at = i;
    }
    EXPECT_LE(worst, 1e-5) << where << ": " << name << " differs by " << worst << " at element " << at;
  }
}

void expect_same_curve(const TrainResult& a, const TrainResult& b, const std::string& where) {
  ASSERT_EQ(a.history.size(), b.history.size()) << where;
  for (size_t s = 0; s < a.history.size(); ++s) {
    EXPECT_NEAR(b.history[s].loss, a.history[s].loss, 1e-5 * std::fabs(a.history[s].loss)) << where << " step " << s + 1;
    EXPECT_NEAR(b.history[s].grad_norm, a.history[s].grad_norm, 1e-5 * a.history[s].grad_norm)
        << where << " step " << s + 1;
  }
  EXPECT_NEAR(b.val_loss, a.val_loss, 1e-5 * a.val_loss) << where;
}

class PipelineTraining : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(PipelineTraining, EqualsSingleProcessAtEveryLayoutAndSchedule) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  if (layouts(world.size()).empty()) return;  // 1 rank: no pipeline to compare (the schedules are tested alone)
  testing::SharedTempDir dir(world);
  const ModelFamily family = GetParam();
  const std::string data = write_corpus(world, dir);
  for (const Layout& layout : layouts(world.size())) {
    const std::string name =
        fmt::format("t{}p{}d{}{}", layout.t, layout.p, layout.d, layout.sequence_parallel ? "sp" : "");
    TrainOptions serial = options(data, family);
    serial.batch *= layout.d;  // the same global batch: the replicas' rows side by side
    serial.out = dir.path(fmt::format("{}_serial_rank{}", name, world.rank()));
    const TrainResult reference = train(self, serial);
    EXPECT_GT(reference.history[0].grad_norm, 0.5) << "the clip threshold should be active";

    for (PipelineSchedule schedule : {PipelineSchedule::GPipe, PipelineSchedule::OneFOneB}) {
      const std::string where = fmt::format("{} {}", name, pipeline_schedule_name(schedule));
      TrainOptions o = options(data, family);
      o.tp = layout.t;
      o.pp = layout.p;
      o.pp_schedule = schedule;
      o.compute.sequence_parallel = layout.sequence_parallel;
      o.out = dir.path(where);
      const TrainResult r = train(world, o);
      expect_same_curve(reference, r, where);
      // this rank's stage, from the mesh layout (TP innermost, then stages)
      const int stage = world.rank() / layout.t % layout.p;
      const int expected = schedule == PipelineSchedule::GPipe ? int(o.grad_accum)
                                                                : std::min(layout.p - stage, int(o.grad_accum));
      EXPECT_EQ(r.pp_max_in_flight, expected) << where << " stage " << stage;
      expect_same_weights(serial.out + "/model.safetensors", o.out + "/model.safetensors", where);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, PipelineTraining, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

TEST(PipelineTrainingErrors, BadLayoutsAreTheSameConfigErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir), ModelFamily::Gpt2);
  o.steps = 1;
  const auto expect_error = [&](const TrainOptions& bad, const std::string& words) {
    try {
      train(world, bad);
      FAIL() << "expected ConfigError containing '" << words << "'";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  TrainOptions more_stages_than_layers = o;
  more_stages_than_layers.model.layers = 1;
  more_stages_than_layers.pp = world.size() == 1 ? 1 : 2;
  if (world.size() > 1) expect_error(more_stages_than_layers, "at least one layer per stage");
  TrainOptions not_dividing = o;
  not_dividing.tp = 1;
  not_dividing.pp = world.size() + 1;
  expect_error(not_dividing, "does not divide");
}

// A training checkpoint written by a pipeline (each stage its own tensors and AdamW moments into the
// same files) resumes at another layout and continues the curve of one uninterrupted process:
// 2 ranks: saved at (1,2,1), resumed at (2,1,1); 4 ranks: saved at (2,2,1), resumed at (1,4,1).
TEST(PipelineCheckpoint, ResumesAtAnotherLayoutOnTheUninterruptedCurve) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  if (world.size() != 2 && world.size() != 4) return;  // no pipeline at 1 rank
  testing::SharedTempDir dir(world);
  TrainOptions o = options(write_corpus(world, dir), ModelFamily::Gpt2);
  o.steps = 4;
  const TrainResult uninterrupted = train(self, o);
  TrainOptions saving = o;
  saving.tp = world.size() == 4 ? 2 : 1;
  saving.pp = 2;
  saving.save_every = 2;
  saving.out = dir.path("run");
  const TrainResult saved = train(world, saving);
  expect_same_curve(uninterrupted, saved, "saving run");
  TrainOptions resuming = o;
  resuming.tp = world.size() == 4 ? 1 : 2;
  resuming.pp = world.size() == 4 ? 4 : 1;
  resuming.resume = dir.path("run/step_00000002");
  const TrainResult resumed = train(world, resuming);
  ASSERT_EQ(resumed.first_step, 2);
  ASSERT_EQ(resumed.history.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_NEAR(resumed.history[s].loss, uninterrupted.history[s + 2].loss, 1e-5 * uninterrupted.history[s + 2].loss)
        << "step " << s + 3;
    EXPECT_NEAR(resumed.history[s].grad_norm, uninterrupted.history[s + 2].grad_norm,
                1e-5 * uninterrupted.history[s + 2].grad_norm)
        << "step " << s + 3;
  }
}

}  // namespace
}  // namespace tensorpar
