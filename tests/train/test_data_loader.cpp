// DataLoader over a memory-mapped data set: data-parallel ranks together read what one loader with
// their combined batch reads (also across shards and after wrapping, which every rank does at the
// same step); seek() continues exactly where position() was; a bad token fails every rank at the
// same step with the same error.
#include <gtest/gtest.h>

#include <numeric>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/train/data_loader.hpp"

namespace tensorpar {
namespace {

using testing::TempDir;

// tokens 0..n-1 (mod 50000) in shards of `shard` tokens: data_000.bin, data_001.bin, ...
std::vector<int32_t> write_shards(const TempDir& dir, int64_t n, int64_t shard) {
  std::vector<int32_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  for (auto& t : all) t %= 50000;
  for (int64_t s = 0; s * shard < n; ++s) {
    const int64_t first = s * shard, count = std::min(shard, n - first);
    io::write_llmc_tokens(dir.file(fmt::format("data_{:03d}.bin", s)),
                          std::span<const int32_t>(all).subspan(size_t(first), size_t(count)), 1);
  }
  return all;
}

TEST(DataLoader, DataParallelRanksTogetherReadTheCombinedBatchAndWrapTogether) {
  TempDir dir;
  write_shards(dir, 1000, 77);
  const io::TokenDataset data = io::TokenDataset::open(dir.file("data_*.bin"));
  const int64_t B = 2, T = 8, dp = 3, begin = 5, end = 905;
  DataLoader single(data, begin, end, B * dp, T, 0, 1, 50257);
  std::vector<DataLoader> ranks;
  for (int r = 0; r < dp; ++r) ranks.emplace_back(data, begin, end, B, T, r, int(dp), 50257);
  std::vector<int32_t> x(size_t(B * dp * T)), y(x.size()), xr(size_t(B * T)), yr(xr.size());
  for (int step = 0; step < 40; ++step) {  // 900 tokens / 49 per step: wraps after 18 steps
    single.next(x.data(), y.data());
    for (int r = 0; r < dp; ++r) {
      ranks[size_t(r)].next(xr.data(), yr.data());
      for (int64_t i = 0; i < B * T; ++i) {
        ASSERT_EQ(xr[size_t(i)], x[size_t(r * B * T + i)]) << "step " << step << " rank " << r << " i " << i;
        ASSERT_EQ(yr[size_t(i)], y[size_t(r * B * T + i)]) << "step " << step << " rank " << r << " i " << i;
      }
      EXPECT_EQ(ranks[size_t(r)].position(), ranks[0].position() + r * B * T);
    }
  }
  // and the first batch is tokens [begin, begin + B*T) with targets one later
  DataLoader first(data, begin, end, B, T, 0, 1, 50257);
  first.next(xr.data(), yr.data());
  for (int64_t i = 0; i < B * T; ++i) {
    EXPECT_EQ(xr[size_t(i)], begin + i);
    EXPECT_EQ(yr[size_t(i)], begin + i + 1);
  }
}

TEST(DataLoader, SeekContinuesWherePositionWas) {
  TempDir dir;
  write_shards(dir, 3000, 1000);
  const io::TokenDataset data = io::TokenDataset::open(dir.file("data_*.bin"));
  const int64_t B = 3, T = 5;
  for (int rank = 0; rank < 2; ++rank) {
    DataLoader a(data, 0, 3000, B, T, rank, 2, 50257), b(data, 0, 3000, B, T, rank, 2, 50257);
    std::vector<int32_t> xa(size_t(B * T)), ya(xa.size()), xb(xa.size()), yb(xa.size());
    for (int i = 0; i < 57; ++i) a.next(xa.data(), ya.data());
    b.seek(a.position());
    EXPECT_EQ(b.position(), a.position());
    for (int i = 0; i < 250; ++i) {  // across shard boundaries and the wrap
      a.next(xa.data(), ya.data());
      b.next(xb.data(), yb.data());
      ASSERT_EQ(xa, xb) << i;
      ASSERT_EQ(ya, yb) << i;
    }
    EXPECT_THROW(b.seek(-1), ConfigError);
    // a resume at another batch size starts its step where the old one stopped: not a multiple of B*T
    b.seek(rank * B * T + 1);
    b.next(xb.data(), yb.data());
    std::vector<int32_t> expected(size_t(B * T));
    data.read(rank * B * T + 1, B * T, expected.data(), 50257);
    EXPECT_EQ(xb, expected);
    EXPECT_THROW(b.seek(rank * B * T + 3000 * B * T), ConfigError);  // past the data
  }
}

TEST(DataLoader, BadTokenFailsEveryDataParallelRankAtTheSameStep) {
  TempDir dir;
  std::vector<int32_t> tokens(400, 7);
  tokens[250] = 60000;  // in rank 1's rows of step 3 (B*T = 32, 2 ranks: step 3 covers [192, 256])
  io::write_llmc_tokens(dir.file("bad.bin"), tokens, 1);
  const io::TokenDataset data = io::TokenDataset::open(dir.file("bad.bin"));
  std::vector<int32_t> x(32), y(32);
  for (int rank = 0; rank < 2; ++rank) {
    DataLoader loader(data, 0, 400, 4, 8, rank, 2, 50257);
    for (int step = 0; step < 3; ++step) loader.next(x.data(), y.data());
    try {
      loader.next(x.data(), y.data());
      ADD_FAILURE() << "rank " << rank << " read the bad token without error";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.bin: token 60000 at position 250"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(DataLoader(data, 0, 400, int64_t(1) << 40, int64_t(1) << 40, 0, 1, 50257), ConfigError);
  EXPECT_THROW(DataLoader(data, 0, 400, 100, 4, 0, 1, 50257), ConfigError);  // 401 tokens needed
}

}  // namespace
}  // namespace tensorpar
