// ParallelLmHead tied to a VocabParallelEmbedding's table (GPT-2) at the world's TP degree against
// the serial (TP=1) head in the same test: logits, loss, dx and the weight gradient (also through
// the tied embedding); two all-reduces forward (the loss) and one backward (dx); finite differences
// on the serial head.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "slices.hpp"
#include "tensorpar/parallel/parallel_lm_head.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::columns;
using testing::random_vector;

constexpr int64_t kVocab = 300, kHidden = 8, kN = 9;
const std::vector<int32_t> kTargets = {0, 299, 128, 255, 256, 17, 140, 83, 64};
const std::vector<int32_t> kInputs = {3, 299, 0, 130, 260, 17, 17, 200, 255};

VocabEmbeddingOptions options() {
  VocabEmbeddingOptions o;
  o.name = "wte";
  o.vocab_size = kVocab;
  o.hidden = kHidden;
  o.seed = 13;
  o.init_std = 0.5f;
  return o;
}

VocabShard shard_of(const VocabParallelEmbedding& e) {
  return VocabShard{e.vocab_start(), e.vocab_end() - e.vocab_start(), e.vocab_size()};
}

// Rows [0, kVocab) of this rank's (rows, kHidden) table slice `local`, compared with the serial table;
// the padding rows must be exactly zero.
::testing::AssertionResult rows_match(const VocabParallelEmbedding& p, std::span<const float> local,
                                      std::span<const float> serial) {
  const int64_t rows = p.vocab_end() - p.vocab_start();
  const int64_t real = std::clamp<int64_t>(kVocab - p.vocab_start(), 0, rows);
  auto r = all_close(local.subspan(0, size_t(real * kHidden)),
                     serial.subspan(size_t(p.vocab_start() * kHidden), size_t(real * kHidden)));
  if (!r) return r << " (real rows from " << p.vocab_start() << ")";
  for (int64_t i = real * kHidden; i < rows * kHidden; ++i)
    if (local[size_t(i)] != 0.0f)
      return ::testing::AssertionFailure() << "padding row " << p.vocab_start() + i / kHidden << " is "
                                           << local[size_t(i)];
  return ::testing::AssertionSuccess();
}

TEST(ParallelLmHead, TiedHeadMatchesSerialWithOneAllReduceBackward) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  VocabParallelEmbedding emb_s(self, options()), emb_p(world, options());
  ParallelLmHead head_s(self, emb_s.weight, shard_of(emb_s), kN), head_p(world, emb_p.weight, shard_of(emb_p), kN);
  ASSERT_EQ(head_p.shard().local_size, padded_vocab_size(kVocab, world.size()) / world.size());

  const auto x = random_vector(size_t(kN * kHidden), 61, 1.5f);

  // logits: this rank's vocabulary columns of the serial logits
  std::vector<float> logits_s(size_t(kN * head_s.shard().local_size)), logits_p(size_t(kN * head_p.shard().local_size));
  head_s.logits(logits_s.data(), x.data(), kN);
  head_p.logits(logits_p.data(), x.data(), kN);
  {
    const int64_t real = std::clamp<int64_t>(kVocab - emb_p.vocab_start(), 0, head_p.shard().local_size);
    EXPECT_TRUE(all_close(columns(logits_p, kN, head_p.shard().local_size, 0, real),
                          columns(logits_s, kN, head_s.shard().local_size, emb_p.vocab_start(), real)))
        << "logits";
  }

  std::vector<float> losses_s(kN), losses_p(kN);
  const float loss_s = head_s.forward(losses_s.data(), x.data(), kTargets.data(), kN);
  world.reset_stats();
  const float loss_p = head_p.forward(losses_p.data(), x.data(), kTargets.data(), kN);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 2) << "LM head forward: the loss's two all-reduces";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0) << "the logits are never gathered";
  EXPECT_NEAR(loss_p, loss_s, 1e-5 * std::fabs(loss_s));
  EXPECT_TRUE(all_close(losses_p, losses_s)) << "per-token losses";
  EXPECT_GT(loss_s, 1.0f);

  const float dloss = 1.0f / float(kN);
  std::vector<float> dx_s(x.size()), dx_p(x.size(), 5.0f);
  head_s.backward(dx_s.data(), x.data(), kTargets.data(), kN, dloss);
  world.reset_stats();
  head_p.backward(dx_p.data(), x.data(), kTargets.data(), kN, dloss);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "LM head backward: dx all-reduced once";
  EXPECT_TRUE(all_close(dx_p, dx_s)) << "dx";
  // the head writes the gradient into the embedding's own parameter: the weight is tied
  EXPECT_TRUE(rows_match(emb_p, emb_p.weight.grad.span(), emb_s.weight.grad.span())) << "dW from the head";
  EXPECT_TRUE(rows_match(emb_p, emb_p.weight.value.span(), emb_s.weight.value.span())) << "W unchanged";

  // a training step's tied gradient: the embedding's backward adds its rows into the same grad
  const auto demb = random_vector(size_t(kN * kHidden), 62);
  emb_s.backward(demb.data(), kInputs.data(), kN);
  emb_p.backward(demb.data(), kInputs.data(), kN);
  EXPECT_TRUE(rows_match(emb_p, emb_p.weight.grad.span(), emb_s.weight.grad.span())) << "dW head + embedding";
}

TEST(ParallelLmHead, EmbeddingThenHeadEndToEnd) {
  // tokens -> tied embedding -> head -> loss, and back, at TP=t against TP=1
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  VocabParallelEmbedding emb_s(self, options()), emb_p(world, options());
  ParallelLmHead head_s(self, emb_s.weight, shard_of(emb_s), kN), head_p(world, emb_p.weight, shard_of(emb_p), kN);
  std::vector<float> h_s(size_t(kN * kHidden)), h_p(h_s.size()), losses(kN), dh_s(h_s.size()), dh_p(h_s.size());
  emb_s.forward(h_s.data(), kInputs.data(), kN);
  emb_p.forward(h_p.data(), kInputs.data(), kN);
  const float loss_s = head_s.forward(losses.data(), h_s.data(), kTargets.data(), kN);
  const float loss_p = head_p.forward(losses.data(), h_p.data(), kTargets.data(), kN);
  EXPECT_NEAR(loss_p, loss_s, 1e-5 * std::fabs(loss_s));
  head_s.backward(dh_s.data(), h_s.data(), kTargets.data(), kN, 1.0f / kN);
  head_p.backward(dh_p.data(), h_p.data(), kTargets.data(), kN, 1.0f / kN);
  EXPECT_TRUE(all_close(dh_p, dh_s));
  emb_s.backward(dh_s.data(), kInputs.data(), kN);
  emb_p.backward(dh_p.data(), kInputs.data(), kN);
  EXPECT_TRUE(rows_match(emb_p, emb_p.weight.grad.span(), emb_s.weight.grad.span())) << "tied dW";
}

TEST(ParallelLmHead, SerialGradientsMatchFiniteDifferences) {
  ProcessGroup self = ProcessGroup::self();
  VocabParallelEmbedding emb(self, options());
  ParallelLmHead head(self, emb.weight, shard_of(emb), kN);
  auto x = random_vector(size_t(kN * kHidden), 63, 1.5f);
  std::vector<float> losses(kN), dx(x.size());
  // the loss is the mean over the tokens: each token's loss weighs 1/N
  auto loss = [&] { return double(head.forward(losses.data(), x.data(), kTargets.data(), kN)); };
  loss();
  head.backward(dx.data(), x.data(), kTargets.data(), kN, 1.0f / kN);
  // eps 1e-2: the float loss (about 5) carries ~1e-6 of rounding, which a smaller step would amplify
  for (size_t i = 0; i < x.size(); i += 3)
    EXPECT_NEAR(dx[i], testing::central_difference(x, i, loss, 1e-2), 2e-4) << "dx[" << i << "]";
  std::vector<float> w(emb.weight.value.span().begin(), emb.weight.value.span().end());
  auto fd = [&] {
    std::copy(w.begin(), w.end(), emb.weight.value.f32());
    return loss();
  };
  // real rows only (the padding rows are never a class: their gradient is zero by construction):
  // every target row, whose gradient is large, and a strided sample of the others
  std::vector<size_t> sample;
  for (int32_t tgt : kTargets)
    for (int64_t c = 0; c < kHidden; c += 3) sample.push_back(size_t(tgt * kHidden + c));
  for (size_t i = 0; i < size_t(kVocab * kHidden); i += 37) sample.push_back(i);
  for (size_t i : sample)
    EXPECT_NEAR(emb.weight.grad.f32()[i], testing::central_difference(w, i, fd, 1e-2), 2e-4) << "dW[" << i << "]";
  std::copy(w.begin(), w.end(), emb.weight.value.f32());
  for (size_t i = size_t(kVocab * kHidden); i < w.size(); ++i) ASSERT_EQ(emb.weight.grad.f32()[i], 0.0f) << i;
}

}  // namespace
}  // namespace tensorpar
