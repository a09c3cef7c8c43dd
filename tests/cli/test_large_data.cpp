// Data that scales: a 4.5 GB data set of three llm.c shards (2.25G tokens, more than int32 counts)
// named by a glob trains and evaluates with a peak resident memory per rank far below the data
// size (it was read whole into every rank before: over 13 GB per rank for this set). The shards
// are sparse (header + patterns at both ends of each, zeros between: token 0), so the test
// writes only a few MB and needs no free disk beyond that.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "cli/cli_runner.hpp"
#include "skip_or_fail.hpp"
#include "tensorpar/io/token_file.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

constexpr int64_t kShardTokens = 750'000'000;  // 1.5 GB of uint16 per shard
constexpr int kShards = 3;
constexpr int64_t kPattern = 1 << 16;          // tokens written at each end of a shard

int32_t pattern(int shard, int64_t i) { return int32_t((i * 7 + shard * 31) % 256); }

// Shard `k` as llm.c v1: header, kPattern tokens, a hole of zeros, kPattern tokens at the end.
void write_sparse_shard(const std::string& path, int k) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0) << path;
  std::vector<int32_t> header(256, 0);
  header[0] = io::kLlmcTokenMagic;
  header[1] = 1;
  header[2] = int32_t(kShardTokens);
  std::vector<uint16_t> head(kPattern), tail(kPattern);
  for (int64_t i = 0; i < kPattern; ++i) {
    head[size_t(i)] = uint16_t(pattern(k, i));
    tail[size_t(i)] = uint16_t(pattern(k, kShardTokens - kPattern + i));
  }
  ASSERT_EQ(::pwrite(fd, header.data(), 1024, 0), 1024);
  ASSERT_EQ(::pwrite(fd, head.data(), 2 * kPattern, 1024), 2 * kPattern);
  ASSERT_EQ(::pwrite(fd, tail.data(), 2 * kPattern, 1024 + 2 * (kShardTokens - kPattern)), 2 * kPattern);
  ASSERT_EQ(::ftruncate(fd, off_t(1024 + 2 * kShardTokens)), 0);
  ::close(fd);
}

class LargeData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tensorpar_large_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // sparse files need only their written blocks; ask for the whole size anyway, in case the file
    // system does not keep holes
    const auto space = fs::space(dir_);
    if (space.available < uint64_t(kShards) * (1024 + 2 * kShardTokens) + (uint64_t(1) << 30))
      TENSORPAR_SKIP_OR_FAIL(fmt::format("needs {} GB free in {} (has {:.1f} GB): not enough disk for the multi-GB data set",
                                         kShards * 1.5, dir_.string(), double(space.available) / 1e9));
    for (int k = 0; k < kShards; ++k) write_sparse_shard(shard(k), k);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string shard(int k) const { return (dir_ / ("train_00000" + std::to_string(k) + ".bin")).string(); }
  fs::path dir_;
};

TEST_F(LargeData, GlobOfMultiGigabyteShardsTrainsWithBoundedMemory) {
  const io::TokenDataset data = io::TokenDataset::open((dir_ / "train_*.bin").string());
  ASSERT_EQ(data.size(), kShards * kShardTokens);
  ASSERT_GT(data.size(), int64_t(INT32_MAX));
  // reads beyond 2^31 tokens and across shard boundaries see what was written there
  for (int k = 0; k < kShards; ++k) {
    const int64_t end = (k + 1) * kShardTokens;
    std::vector<int32_t> got(2 * kPattern);
    if (k + 1 < kShards) {
      data.read(end - kPattern, 2 * kPattern, got.data(), 256);
      for (int64_t i = 0; i < kPattern; ++i) {
        ASSERT_EQ(got[size_t(i)], pattern(k, kShardTokens - kPattern + i)) << k << " " << i;
        ASSERT_EQ(got[size_t(kPattern + i)], pattern(k + 1, i)) << k << " " << i;
      }
    }
  }

  // quoted so the shell passes the pattern itself (appended: GCC 12 warns falsely on "'" + string)
  std::string glob = "'";
  glob.append((dir_ / "train_*.bin").string()).append("'");
  // validation is the tail 10%: its batches are read from token 2.02G on, beyond int32 positions
  const auto r = run_cli(2,
                         "train --data " + glob + " --vocab 256 --layers 2 --hidden 32 --heads 4 --seq 64 --batch 4"
                         " --steps 6 --val-every 3 --val-batches 2 --json --out " + (dir_ / "model").string(),
                         dir_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.last_line());
  const double rss_mb = j.at("peak_rss_mb"), data_mb = double(kShards) * 2 * kShardTokens / 1e6;
  std::printf("peak RSS per rank %.1f MB with a %.0f MB data set (%lld tokens)\n", rss_mb, data_mb,
              static_cast<long long>(data.size()));
#if defined(__SANITIZE_ADDRESS__)
  const double bound_mb = 1000.0;  // AddressSanitizer's shadow memory and quarantine: 214 MB measured
#else
  const double bound_mb = 200.0;  // 27.5 MB measured
#endif
  EXPECT_LT(rss_mb, bound_mb) << "resident memory must not grow with the " << data_mb << " MB of data";
  EXPECT_TRUE(j.contains("val_loss"));
  EXPECT_TRUE(std::isfinite(double(j.at("loss"))));

  // eval takes the same glob as one data set
  const auto e = run_cli(2, "eval --model " + (dir_ / "model").string() + " --data " + glob + " --batch 4 --seq 64 --json",
                         dir_.string());
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_TRUE(std::isfinite(double(nlohmann::json::parse(e.last_line()).at("loss"))));
}

}  // namespace
}  // namespace tensorpar
