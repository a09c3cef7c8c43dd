// VocabParallelEmbedding at the world's TP degree against the serial (TP=1) table in the same test:
// the forward is the plain table lookup, the backward scatters into this rank's rows only, the
// padding rows are zero, Megatron's padding rule, and out-of-range tokens are refused.
#include <gtest/gtest.h>

#include <string>

#include "slices.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::random_vector;

constexpr int64_t kVocab = 300, kHidden = 8;

VocabEmbeddingOptions options() {
  VocabEmbeddingOptions o;
  o.name = "wte";
  o.vocab_size = kVocab;
  o.hidden = kHidden;
  o.seed = 9;
  o.init_std = 0.5f;
  return o;
}

// Tokens that hit every rank's slice at every TP degree (0, 299 = last real row), with repeats so the
// backward must accumulate.
const std::vector<int32_t> kTokens = {0, 5, 127, 128, 255, 256, 299, 5, 299, 200, 64, 0};

// Row `row` of a row-major (rows, kHidden) table.
std::span<const float> row_of(std::span<const float> table, int64_t row) {
  return table.subspan(size_t(row * kHidden), size_t(kHidden));
}

TEST(PaddedVocabSize, MegatronRuleMultipleOf128TimesTp) {
  // GPT-2's 50257 tokens: the next multiple of 128, 256, 384 and 512
  EXPECT_EQ(padded_vocab_size(50257, 1), 50304);  // 393 * 128
  EXPECT_EQ(padded_vocab_size(50257, 2), 50432);  // 197 * 256
  EXPECT_EQ(padded_vocab_size(50257, 3), 50304);  // 131 * 384
  EXPECT_EQ(padded_vocab_size(50257, 4), 50688);  // 99 * 512
  EXPECT_EQ(padded_vocab_size(256, 2), 256);      // already a multiple: unchanged
  EXPECT_EQ(padded_vocab_size(257, 2), 512);
  EXPECT_EQ(padded_vocab_size(1, 1), 128);
  EXPECT_EQ(padded_vocab_size(32000, 1, 64), 32000);  // a custom multiple
  EXPECT_EQ(padded_vocab_size(32001, 3, 64), 32064);  // 167 * 192
  for (int t = 1; t <= 8; ++t)
    for (int64_t v : {1, 127, 128, 129, 300, 50257}) {
      const int64_t p = padded_vocab_size(v, t);
      EXPECT_EQ(p % (128 * t), 0) << v << " at TP " << t;
      EXPECT_TRUE(p >= v && p - v < 128 * t) << v << " at TP " << t << " -> " << p;
    }
}

TEST(VocabParallelEmbedding, ShardsAreSlicesOfTheSerialTableAndPaddingIsZero) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const int t = world.size(), r = world.rank();
  VocabParallelEmbedding serial(self, options()), parallel(world, options());
  const int64_t padded = padded_vocab_size(kVocab, t), rows = padded / t;
  ASSERT_EQ(serial.padded_vocab(), padded_vocab_size(kVocab, 1));
  ASSERT_EQ(parallel.padded_vocab(), padded);
  ASSERT_EQ(parallel.vocab_start(), r * rows);
  ASSERT_EQ(parallel.vocab_end(), (r + 1) * rows);
  ASSERT_EQ(parallel.weight.value.dim(0), rows);
  ASSERT_EQ(parallel.weight.global_shape, (Shape{padded, kHidden}));

  // The serial table pads to 384 rows, the parallel one to 128*t; they agree on the real rows.
  const auto w = parallel.weight.value.span(), ws = serial.weight.value.span();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t g = parallel.vocab_start() + i;
    if (g < kVocab) {
      EXPECT_TRUE(all_close(row_of(w, i), row_of(ws, g), 0, 0)) << "row " << g;
      EXPECT_EQ(parallel.weight.global_index(i * kHidden), g * kHidden);
    } else {
      EXPECT_TRUE(all_close(row_of(w, i), std::vector<float>(kHidden, 0.0f), 0, 0)) << "padding row " << g;
    }
  }
  for (int64_t g = kVocab; g < serial.padded_vocab(); ++g)
    EXPECT_TRUE(all_close(row_of(ws, g), std::vector<float>(kHidden, 0.0f), 0, 0)) << "serial padding row " << g;
  double norm = 0;  // the real rows are initialised: the checks above are not comparing zeros
  for (int64_t g = 0; g < kVocab; ++g)
    for (float v : row_of(ws, g)) norm += double(v) * v;
  EXPECT_GT(norm, 0.1 * kVocab * kHidden);
}

TEST(VocabParallelEmbedding, MatchesSerialLookupForwardAndBackward) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  VocabParallelEmbedding serial(self, options()), parallel(world, options());
  const int64_t N = int64_t(kTokens.size());

  // the expected forward, spelled out: row tokens[n] of the serial table
  std::vector<float> lookup;
  for (int32_t tok : kTokens) {
    const auto row = row_of(serial.weight.value.span(), tok);
    lookup.insert(lookup.end(), row.begin(), row.end());
  }
  std::vector<float> y_serial(size_t(N * kHidden)), y(size_t(N * kHidden), -7.0f);
  serial.forward(y_serial.data(), kTokens.data(), N);
  EXPECT_TRUE(all_close(y_serial, lookup, 0, 0)) << "serial forward is the lookup";

  world.reset_stats();
  parallel.forward(y.data(), kTokens.data(), N);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "forward: one all-reduce of the partial lookups";
  // one owner and t-1 zeros per row: the sum is exact
  EXPECT_TRUE(all_close(y, lookup, 0, 0)) << "parallel forward is the lookup";

  const auto dout = random_vector(size_t(N * kHidden), 41);
  serial.backward(dout.data(), kTokens.data(), N);
  world.reset_stats();
  parallel.backward(dout.data(), kTokens.data(), N);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 0) << "backward needs no communication";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0);

  // the serial gradient spelled out: dout rows summed into their token's row
  std::vector<float> expected(size_t(serial.padded_vocab() * kHidden), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < kHidden; ++c) expected[size_t(kTokens[size_t(n)] * kHidden + c)] += dout[size_t(n * kHidden + c)];
  EXPECT_TRUE(all_close(serial.weight.grad.span(), expected));

  const auto g = parallel.weight.grad.span(), gs = serial.weight.grad.span();
  for (int64_t i = 0; i < parallel.weight.value.dim(0); ++i) {
    const int64_t row = parallel.vocab_start() + i;
    if (row < kVocab)
      EXPECT_TRUE(all_close(row_of(g, i), row_of(gs, row))) << "grad row " << row;
    else
      EXPECT_TRUE(all_close(row_of(g, i), std::vector<float>(kHidden, 0.0f), 0, 0)) << "padding grad row " << row;
  }

  // gradients accumulate
  parallel.backward(dout.data(), kTokens.data(), N);
  for (int64_t i = 0; i < std::min<int64_t>(parallel.weight.value.dim(0), kVocab - parallel.vocab_start()); ++i) {
    std::vector<float> twice(row_of(gs, parallel.vocab_start() + i).begin(), row_of(gs, parallel.vocab_start() + i).end());
    for (float& v : twice) v *= 2;
    ASSERT_TRUE(all_close(row_of(g, i), twice)) << "accumulated grad row " << parallel.vocab_start() + i;
  }
}

TEST(VocabParallelEmbedding, OutOfRangeTokenThrowsShapeErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  VocabParallelEmbedding emb(world, options());
  std::vector<float> y(3 * kHidden);
  // 300 is a padding row at every TP degree (never a real token); -1 and 10^6 are outside the table
  for (int32_t bad : {int32_t(kVocab), -1, 1000000}) {
    const std::vector<int32_t> tokens = {1, bad, 2};
    world.reset_stats();
    try {
      emb.forward(y.data(), tokens.data(), 3);
      FAIL() << "expected ShapeError for token " << bad;
    } catch (const ShapeError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("token id " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("[0, 300)"), std::string::npos) << msg;
    }
    // every rank refuses before communicating, so no rank is left waiting in a collective
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 0);
  }
  world.barrier();
}

}  // namespace
}  // namespace tensorpar
