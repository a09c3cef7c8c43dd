// Compressed collectives (bf16 / blockwise int8 on the wire, f32 sums) against the exact f32 result,
// within bounds derived from the rounding of each format:
//   bf16 RNE keeps 8 significant bits: |bf16(x) - x| <= 2^-8 |x| (half an ulp of 2^-7 relative).
//   int8 block: d = max|x|/127, q = round(x/d): |q d - x| <= d/2.
// A compressed all-reduce rounds every rank's contribution once, sums in f32, rounds the sum once:
//   bf16: |out - s| <= 2^-8 sum_r |x_r| + 2^-8 (|s| + 2^-8 sum_r |x_r|)
//   int8: |out - s| <= sum_r d_r / 2 + d' / 2, d' <= (max_block |s| + max_block sum_r d_r/2) / 127
// plus f32 summation and scale rounding (t * 2^-22 sum_r |x_r|). A reduce-scatter has the first term
// only (its result stays f32); an all-gather returns exactly the round trip of each rank's input.
// Every rank must hold bit-identical results (TP ranks stay in lock-step).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tensorpar/comm/compressed_collectives.hpp"

namespace tensorpar {
namespace {

// Rank r's contribution, computable on every rank (for the reference): magnitudes spread over
// several binades, signs mixed, an all-zero stretch (scale 0) and a block with one large outlier.
std::vector<float> contribution(int r, int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  uint32_t state = 2654435761u * uint32_t(r + 1);
  for (int64_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    const float u = float(state >> 8) / float(1 << 24) - 0.5f;
    x[size_t(i)] = u * std::ldexp(1.0f, int((i / 7 + r) % 9) - 4);
  }
  for (int64_t i = 64; i < std::min<int64_t>(n, 96); ++i) x[size_t(i)] = 0;
  if (n > 130) x[130] = 100.0f * float(r + 1);
  return x;
}

std::vector<float> round_trip(CommDtype dtype, std::vector<float> x) {
  const int64_t block = comm_block(dtype);
  x.resize(size_t((int64_t(x.size()) + block - 1) / block * block), 0.0f);
  std::vector<uint8_t> wire(size_t(wire_bytes(dtype, int64_t(x.size()))));
  compress(dtype, wire, x);
  std::vector<float> y(x.size());
  decompress(dtype, y, wire, false);
  return y;
}

// Per-element error bound of one rounding of x (its int8 block starts at a multiple of 32 of i).
std::vector<double> rounding_bound(CommDtype dtype, const std::vector<float>& x) {
  std::vector<double> bound(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == CommDtype::BF16) {
      bound[i] = std::ldexp(std::fabs(double(x[i])), -8);
    } else {
      double amax = 0;
      const size_t first = i / 32 * 32;
      for (size_t j = first; j < std::min(x.size(), first + 32); ++j) amax = std::max(amax, std::fabs(double(x[j])));
      bound[i] = amax / 127 / 2;
    }
  }
  return bound;
}

// Every rank's copy of `v` equals rank 0's, bit for bit.
::testing::AssertionResult identical_on_every_rank(ProcessGroup& group, const std::vector<float>& v) {
  std::vector<float> all(v.size() * size_t(group.size()));
  group.all_gather(std::span<float>(all), std::span<const float>(v));
  for (int r = 1; r < group.size(); ++r)
    if (std::memcmp(all.data() + size_t(r) * v.size(), all.data(), v.size() * sizeof(float)) != 0)
      return ::testing::AssertionFailure() << "rank " << r << " holds different bits than rank 0";
  return ::testing::AssertionSuccess();
}

class CompressedTest : public ::testing::TestWithParam<CommDtype> {};

TEST_P(CompressedTest, RoundTripWithinTheFormatsBoundAndWireBytes) {
  const CommDtype dtype = GetParam();
  const std::vector<float> x = contribution(0, 1024);
  const std::vector<float> y = round_trip(dtype, x);
  const std::vector<double> bound = rounding_bound(dtype, x);
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_LE(std::fabs(double(y[i]) - x[i]), bound[i] * (1 + 1e-6) + 1e-30) << "index " << i;
  EXPECT_EQ(wire_bytes(dtype, 1024), dtype == CommDtype::BF16 ? 2048 : 1024 + 32 * 4);
  // the all-zero stretch stays zero (int8 scale 0), not NaN
  for (size_t i = 64; i < 96; ++i) ASSERT_EQ(y[i], 0.0f);
}

TEST_P(CompressedTest, NonFiniteValuesSurviveTheTrip) {
  std::vector<float> x(64, 1.0f);
  x[5] = std::numeric_limits<float>::quiet_NaN();
  x[40] = std::numeric_limits<float>::infinity();
  const std::vector<float> y = round_trip(GetParam(), x);
  EXPECT_TRUE(std::isnan(y[5]));
  EXPECT_FALSE(std::isfinite(y[40]));
}

TEST_P(CompressedTest, AllReduceWithinBoundIdenticalOnEveryRankAndCounted) {
  const CommDtype dtype = GetParam();
  ProcessGroup world = ProcessGroup::world();
  const int t = world.size();
  for (const int64_t n : {int64_t(1), int64_t(31), int64_t(1003), int64_t(4096)}) {
    std::vector<float> data = contribution(world.rank(), n);
    world.reset_stats();
    all_reduce_compressed(world, std::span<float>(data), dtype);
    EXPECT_EQ(world.stats().count(Collective::AllReduce), 1);
    if (t == 1) {  // no-op: nothing is rounded or sent
      EXPECT_EQ(data, contribution(0, n));
      continue;
    }
    // wire bytes of the padded vector: shard = ceil(n/t) rounded up to the block
    const int64_t block = comm_block(dtype), shard = ((n + t - 1) / t + block - 1) / block * block;
    EXPECT_EQ(world.stats().bytes[size_t(Collective::AllReduce)], t * wire_bytes(dtype, shard)) << "n " << n;
    std::vector<double> sum(size_t(n), 0.0), abs_sum(size_t(n), 0.0), e1(size_t(n), 0.0);
    for (int r = 0; r < t; ++r) {
      const std::vector<float> x = contribution(r, n);
      const std::vector<double> b = rounding_bound(dtype, x);
      for (int64_t i = 0; i < n; ++i) {
        sum[size_t(i)] += x[size_t(i)];
        abs_sum[size_t(i)] += std::fabs(x[size_t(i)]);
        e1[size_t(i)] += b[size_t(i)];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      double second;  // the rounding of the reduced shard
      if (dtype == CommDtype::BF16) {
        second = std::ldexp(std::fabs(sum[size_t(i)]) + e1[size_t(i)], -8);
      } else {
        double amax = 0;
        for (int64_t j = i / 32 * 32; j < std::min(n, i / 32 * 32 + 32); ++j)
          amax = std::max(amax, std::fabs(sum[size_t(j)]) + e1[size_t(j)]);
        second = amax / 127 / 2;
      }
      const double bound = e1[size_t(i)] + second + t * std::ldexp(abs_sum[size_t(i)], -22);
      ASSERT_LE(std::fabs(data[size_t(i)] - sum[size_t(i)]), bound) << "n " << n << " index " << i;
    }
    EXPECT_TRUE(identical_on_every_rank(world, data)) << "n " << n;
  }
}

TEST_P(CompressedTest, ReduceScatterWithinBoundAndCounted) {
  const CommDtype dtype = GetParam();
  ProcessGroup world = ProcessGroup::world();
  const int t = world.size();
  for (const int64_t m : {int64_t(5), int64_t(200)}) {  // shards not multiples of the int8 block
    const std::vector<float> in = contribution(world.rank(), m * t);
    std::vector<float> out(static_cast<size_t>(m));
    world.reset_stats();
    reduce_scatter_compressed(world, std::span<float>(out), std::span<const float>(in), dtype);
    EXPECT_EQ(world.stats().count(Collective::ReduceScatter), 1);
    if (t == 1) {
      EXPECT_EQ(out, in);
      continue;
    }
    const int64_t block = comm_block(dtype), chunk = (m + block - 1) / block * block;
    EXPECT_EQ(world.stats().bytes[size_t(Collective::ReduceScatter)], t * wire_bytes(dtype, chunk));
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0, abs_sum = 0, e1 = 0;
      for (int r = 0; r < t; ++r) {
        // rank r's chunk for this rank, rounded on its own block grid (chunks start at block 0)
        const std::vector<float> x = contribution(r, m * t);
        const std::vector<float> chunk_r(x.begin() + world.rank() * m, x.begin() + (world.rank() + 1) * m);
        sum += chunk_r[size_t(i)];
        abs_sum += std::fabs(chunk_r[size_t(i)]);
        e1 += rounding_bound(dtype, chunk_r)[size_t(i)];
      }
      ASSERT_LE(std::fabs(out[size_t(i)] - sum), e1 + t * std::ldexp(abs_sum, -22)) << "m " << m << " index " << i;
    }
  }
}

TEST_P(CompressedTest, AllGatherIsEachRanksRoundTripOnEveryRank) {
  const CommDtype dtype = GetParam();
  ProcessGroup world = ProcessGroup::world();
  const int t = world.size();
  const int64_t m = 77;
  const std::vector<float> in = contribution(world.rank(), m);
  std::vector<float> out(size_t(m * t));
  world.reset_stats();
  all_gather_compressed(world, std::span<float>(out), std::span<const float>(in), dtype);
  EXPECT_EQ(world.stats().count(Collective::AllGather), 1);
  for (int r = 0; r < t; ++r) {
    // with one rank nothing is rounded; otherwise the owner too takes its wire value
    const std::vector<float> expected = t == 1 ? contribution(r, m) : round_trip(dtype, contribution(r, m));
    ASSERT_EQ(0, std::memcmp(out.data() + r * m, expected.data(), size_t(m) * sizeof(float))) << "rank " << r;
  }
  // 77 values: bf16 154 bytes; int8 padded to 96 = 3 blocks of 36 bytes
  if (t > 1) {
    EXPECT_EQ(world.stats().bytes[size_t(Collective::AllGather)], t * (dtype == CommDtype::BF16 ? 154 : 108));
  }
  EXPECT_TRUE(identical_on_every_rank(world, out));
}

TEST(Compressed, F32IsThePlainCollectiveAndParseRefusesUnknownNames) {
  ProcessGroup world = ProcessGroup::world();
  std::vector<float> a = contribution(world.rank(), 100), b = a;
  all_reduce_compressed(world, std::span<float>(a), CommDtype::F32);
  world.all_reduce(std::span<float>(b));
  EXPECT_EQ(a, b);
  EXPECT_EQ(parse_comm_dtype("int8"), CommDtype::Int8);
  EXPECT_THROW(parse_comm_dtype("fp8"), ConfigError);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CompressedTest, ::testing::Values(CommDtype::BF16, CommDtype::Int8),
                         [](const auto& info) { return std::string(comm_dtype_name(info.param)); });

}  // namespace
}  // namespace tensorpar
