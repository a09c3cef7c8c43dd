// Vocabulary-parallel cross-entropy on each rank's column shard of a padded logits matrix against the
// serial full-vocabulary cross_entropy_forward/backward (kernels/) on the real columns: per-token
// losses, mean loss and dlogits; padding columns hold huge garbage and change nothing; two
// all-reduces forward, none backward. The vectorised, threaded loss is also checked against the scalar
// one it replaced (std::exp, one thread; kept below as the reference) on a large vocabulary.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "slices.hpp"
#include "tensorpar/kernels/cross_entropy.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/parallel/vocab_parallel_cross_entropy.hpp"
#include "tensorpar/parallel/vocab_parallel_cross_entropy_bf16.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::columns;
using testing::random_vector;

constexpr int64_t kVocab = 300, kN = 7;
// 0 and 299 (the first and last real class), and classes in every rank's slice at TP 1..4
const std::vector<int32_t> kTargets = {0, 299, 128, 255, 256, 17, 140};

struct Fixture {
  int t, r;
  int64_t padded, local;
  VocabShard shard;
  std::vector<float> full;  // (kN, padded): real logits, then garbage in the padding columns
};

Fixture make_fixture(const ProcessGroup& world, float garbage) {
  Fixture f;
  f.t = world.size();
  f.r = world.rank();
  f.padded = padded_vocab_size(kVocab, f.t);
  f.local = f.padded / f.t;
  f.shard = VocabShard{f.r * f.local, f.local, kVocab};
  f.full = random_vector(size_t(kN * f.padded), 51, 4.0f);
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t v = kVocab; v < f.padded; ++v)
      f.full[size_t(n * f.padded + v)] = garbage * float(1 + (v % 3));  // would dominate max and sum if counted
  // one logit larger than every other real one, on a row whose target is elsewhere: the max must
  // come from another rank's shard at TP > 1
  f.full[size_t(3 * f.padded + 10)] = 12.0f;
  return f;
}

TEST(VocabParallelCrossEntropy, MatchesSerialOnRealColumnsWithGarbagePadding) {
  ProcessGroup world = ProcessGroup::world();
  const Fixture f = make_fixture(world, 1e4f);
  ASSERT_EQ(int64_t(kTargets.size()), kN);

  // serial reference: the kernel reads only the first kVocab of `padded` columns
  std::vector<float> losses_ref(kN), dlogits_ref(f.full.size());
  const float mean_ref = cross_entropy_forward(losses_ref.data(), f.full.data(), f.padded, kTargets.data(), kN, kVocab);
  const float dloss = 1.0f / float(kN);  // d(mean)/d(loss_n)
  cross_entropy_backward(dlogits_ref.data(), f.full.data(), f.padded, kTargets.data(), kN, kVocab, dloss);

  const auto mine = columns(f.full, kN, f.padded, f.shard.start, f.local);
  std::vector<float> losses(kN), row_max(kN), row_sumexp(kN), dlogits(mine.size(), -3.0f);
  world.reset_stats();
  const float mean = vocab_parallel_cross_entropy_forward(world, losses.data(), row_max.data(), row_sumexp.data(),
                                                          mine.data(), kTargets.data(), kN, f.shard);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 2) << "forward: max, then [sum exp | target logit]";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0) << "the full logits are never gathered";

  EXPECT_TRUE(all_close(losses, losses_ref)) << "per-token losses";
  EXPECT_NEAR(mean, mean_ref, 1e-5 * std::fabs(mean_ref)) << "mean loss";
  EXPECT_FLOAT_EQ(row_max[3], 12.0f) << "the row max is over the whole real vocabulary, not the padding";
  for (int64_t n = 0; n < kN; ++n) {
    EXPECT_LT(row_max[size_t(n)], 100.0f) << "row " << n << ": padding entered the max";
    EXPECT_GT(losses[size_t(n)], 0.0f) << "row " << n;
  }

  world.reset_stats();
  vocab_parallel_cross_entropy_backward(dlogits.data(), mine.data(), row_max.data(), row_sumexp.data(),
                                        kTargets.data(), kN, f.shard, dloss);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 0) << "backward is local";
  EXPECT_TRUE(all_close(dlogits, columns(dlogits_ref, kN, f.padded, f.shard.start, f.local)))
      << "dlogits of this rank's columns";
  for (int64_t n = 0; n < kN; ++n) {
    for (int64_t v = std::max<int64_t>(0, kVocab - f.shard.start); v < f.local; ++v) {
      ASSERT_EQ(dlogits[size_t(n * f.local + v)], 0.0f) << "padding column " << f.shard.start + v << " row " << n;
    }
  }

  // in place (dlogits aliasing logits), as the LM head calls it
  std::vector<float> inplace = mine;
  vocab_parallel_cross_entropy_backward(inplace.data(), inplace.data(), row_max.data(), row_sumexp.data(),
                                        kTargets.data(), kN, f.shard, dloss);
  EXPECT_TRUE(all_close(inplace, dlogits, 0, 0)) << "in-place backward";
}

// The scalar vocab-parallel loss as it was before vectorising (std::exp, one thread), as the reference.
float scalar_reference_forward(ProcessGroup& tp, float* losses, float* row_max, float* row_sumexp, const float* logits,
                               const int32_t* targets, int64_t N, const VocabShard& shard) {
  const int64_t V = shard.local_size, real = std::clamp<int64_t>(shard.vocab_size - shard.start, 0, V);
  for (int64_t n = 0; n < N; ++n) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t v = 0; v < real; ++v) m = std::max(m, logits[n * V + v]);
    row_max[n] = m;
  }
  tp.all_reduce(std::span<float>(row_max, size_t(N)), {ReduceOp::Max});
  std::vector<float> sums(size_t(2 * N), 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    float s = 0;
    for (int64_t v = 0; v < real; ++v) s += std::exp(logits[n * V + v] - row_max[n]);
    sums[size_t(n)] = s;
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) sums[size_t(N + n)] = logits[n * V + t];
  }
  tp.all_reduce(std::span<float>(sums));
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    row_sumexp[n] = sums[size_t(n)];
    losses[n] = std::log(sums[size_t(n)]) + row_max[n] - sums[size_t(N + n)];
    total += losses[n];
  }
  return float(total / double(N));
}

void scalar_reference_backward(float* dlogits, const float* logits, const float* row_max, const float* row_sumexp,
                               const int32_t* targets, int64_t N, const VocabShard& shard, float dloss) {
  const int64_t V = shard.local_size, real = std::clamp<int64_t>(shard.vocab_size - shard.start, 0, V);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t v = 0; v < real; ++v) dlogits[n * V + v] = std::exp(logits[n * V + v] - row_max[n]) * dloss / row_sumexp[n];
    for (int64_t v = real; v < V; ++v) dlogits[n * V + v] = 0.0f;
    const int64_t t = int64_t(targets[n]) - shard.start;
    if (t >= 0 && t < real) dlogits[n * V + t] -= dloss;
  }
}

// Large enough (64 rows x 5003 classes) that the kernels take their threaded path at TP 1..4.
TEST(VocabParallelCrossEntropy, VectorisedThreadedMatchesScalarReferenceWithinBound) {
  ProcessGroup world = ProcessGroup::world();
  constexpr int64_t V = 5003, N = 64;
  const int t = world.size();
  const int64_t padded = padded_vocab_size(V, t), local = padded / t;
  const VocabShard shard{world.rank() * local, local, V};
  const auto full = random_vector(size_t(N * padded), 77, 8.0f);  // logits in [-8, 8]: exp spans e^16
  const auto mine = columns(full, N, padded, shard.start, local);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = int32_t((n * 7919) % V);

  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  std::vector<float> losses(N), row_max(N), row_sumexp(N), dlogits(mine.size());
  const float mean = vocab_parallel_cross_entropy_forward(world, losses.data(), row_max.data(), row_sumexp.data(),
                                                          mine.data(), targets.data(), N, shard);
  vocab_parallel_cross_entropy_backward(dlogits.data(), mine.data(), row_max.data(), row_sumexp.data(),
                                        targets.data(), N, shard, 1.0f / N);
  omp_set_num_threads(saved);
  std::vector<float> losses_ref(N), max_ref(N), sumexp_ref(N), dlogits_ref(mine.size());
  const float mean_ref = scalar_reference_forward(world, losses_ref.data(), max_ref.data(), sumexp_ref.data(),
                                                  mine.data(), targets.data(), N, shard);
  scalar_reference_backward(dlogits_ref.data(), mine.data(), max_ref.data(), sumexp_ref.data(), targets.data(), N,
                            shard, 1.0f / N);

  // Error bound, u = 2^-24: each exponential within 1 ulp (glibc) and 2 ulp (exp_approx), so 3u apart;
  // the two float sums of V terms in different orders each within (V-1)u of the exact sum. So the sums
  // differ by at most (2V + 1)u relative, and log(S) + max - target (each rounded) by that plus 4u of
  // the magnitudes involved. dlogits = exp * (dloss / S): (2V + 6)u relative, plus u * dloss at the target.
  const double u = std::ldexp(1.0, -24);
  for (int64_t n = 0; n < N; ++n) {
    ASSERT_EQ(row_max[size_t(n)], max_ref[size_t(n)]) << "row " << n << ": the max is exact";
    const double sum_bound = (2.0 * V + 1) * u * sumexp_ref[size_t(n)];
    ASSERT_NEAR(row_sumexp[size_t(n)], sumexp_ref[size_t(n)], sum_bound) << "row " << n;
    const double loss_bound = (2.0 * V + 1) * u + 4 * u * (std::fabs(losses_ref[size_t(n)]) + 2 * 8.0);
    ASSERT_NEAR(losses[size_t(n)], losses_ref[size_t(n)], loss_bound) << "row " << n;
  }
  EXPECT_NEAR(mean, mean_ref, (2.0 * V + 1) * u + 4 * u * (std::fabs(mean_ref) + 16.0)) << "mean loss";
  const float dloss = 1.0f / N;
  for (size_t i = 0; i < dlogits.size(); ++i) {
    const double ref = dlogits_ref[i];
    const double bound = (2.0 * V + 6) * u * std::fabs(ref + (ref < 0 ? dloss : 0.0)) + u * dloss;
    ASSERT_NEAR(dlogits[i], ref, bound) << "dlogits index " << i << " (row " << i / size_t(local) << ")";
  }
}

// The bf16 LM head's backward writes dlogits in bf16 directly: bit for bit the f32 backward rounded,
// on the garbage-padded fixture and on 64 x 5003 classes (threaded, rows longer than one 4096 tile).
TEST(VocabParallelCrossEntropy, Bf16BackwardEqualsF32BackwardRounded) {
  ProcessGroup world = ProcessGroup::world();
  const int t = world.size();
  for (const int64_t V : {kVocab, int64_t(5003)}) {
    const int64_t N = V == kVocab ? kN : 64;
    const int64_t padded = padded_vocab_size(V, t), local = padded / t;
    const VocabShard shard{world.rank() * local, local, V};
    auto full = random_vector(size_t(N * padded), 78, 8.0f);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t v = V; v < padded; ++v) full[size_t(n * padded + v)] = 1e4f;  // padding garbage
    const auto mine = columns(full, N, padded, shard.start, local);
    std::vector<int32_t> targets(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) targets[size_t(n)] = int32_t((n * 7919 + 3) % V);
    std::vector<float> losses(static_cast<size_t>(N)), row_max(static_cast<size_t>(N)), row_sumexp(static_cast<size_t>(N)),
        dlogits(mine.size());
    vocab_parallel_cross_entropy_forward(world, losses.data(), row_max.data(), row_sumexp.data(), mine.data(),
                                         targets.data(), N, shard);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    vocab_parallel_cross_entropy_backward(dlogits.data(), mine.data(), row_max.data(), row_sumexp.data(),
                                          targets.data(), N, shard, 1.0f / float(N));
    std::vector<bf16> expected(mine.size()), fused(mine.size());
    convert_f32_to_bf16(expected.data(), dlogits.data(), int64_t(dlogits.size()));
    vocab_parallel_cross_entropy_backward_bf16(fused.data(), mine.data(), row_max.data(), row_sumexp.data(),
                                               targets.data(), N, shard, 1.0f / float(N));
    omp_set_num_threads(saved);
    for (size_t i = 0; i < fused.size(); ++i)
      ASSERT_EQ(fused[i].bits, expected[i].bits) << "V=" << V << " index " << i << " (row " << i / size_t(local)
                                                 << ", column " << shard.start + int64_t(i % size_t(local)) << ")";
  }
}

TEST(VocabParallelCrossEntropy, PaddingValuesDoNotChangeTheLoss) {
  ProcessGroup world = ProcessGroup::world();
  std::vector<float> first;
  for (float garbage : {0.0f, 1e4f, -1e4f, 3e38f}) {
    const Fixture f = make_fixture(world, garbage);
    const auto mine = columns(f.full, kN, f.padded, f.shard.start, f.local);
    std::vector<float> losses(kN), row_max(kN), row_sumexp(kN);
    vocab_parallel_cross_entropy_forward(world, losses.data(), row_max.data(), row_sumexp.data(), mine.data(),
                                         kTargets.data(), kN, f.shard);
    if (first.empty())
      first = losses;
    else
      EXPECT_TRUE(all_close(losses, first, 0, 0)) << "padding value " << garbage;
  }
}

TEST(VocabParallelCrossEntropy, TargetOutsideTheVocabularyThrowsOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  const Fixture f = make_fixture(world, 0.0f);
  const auto mine = columns(f.full, kN, f.padded, f.shard.start, f.local);
  std::vector<float> losses(kN), row_max(kN), row_sumexp(kN);
  for (int32_t bad : {int32_t(kVocab), -1}) {  // 300 is a padding column: never a target
    std::vector<int32_t> targets = kTargets;
    targets[2] = bad;
    world.reset_stats();
    try {
      vocab_parallel_cross_entropy_forward(world, losses.data(), row_max.data(), row_sumexp.data(), mine.data(),
                                           targets.data(), kN, f.shard);
      FAIL() << "expected ShapeError for target " << bad;
    } catch (const ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find("target token " + std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 0) << "refused before communicating";
  }
  world.barrier();
}

}  // namespace
}  // namespace tensorpar
