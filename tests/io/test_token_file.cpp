// Token files: llm.c v1/v2 round trips, plain text read as bytes, globs of shards read as one data
// set, ids checked against the vocabulary as they are read, and corrupt headers rejected.
#include "tensorpar/io/token_file.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::read_file_bytes;
using tensorpar::testing::TempDir;

constexpr int64_t kAnyVocab = kMaxTokenVocab;  // every id that fits in int32

std::string llmc_bytes(int32_t magic, int32_t version, int32_t count, const std::string& body) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  return std::string(reinterpret_cast<const char*>(header.data()), 1024) + body;
}

std::vector<int32_t> read_all(const TokenDataset& d) {
  std::vector<int32_t> out(size_t(d.size()));
  d.read(0, d.size(), out.data(), kAnyVocab);
  return out;
}

void expect_open_error(const std::string& path, std::initializer_list<std::string> parts) {
  try {
    TokenDataset::open(path);
    ADD_FAILURE() << path << ": opened without error";
  } catch (const IoError& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

TEST(TokenFile, Version1RoundTrip) {
  TempDir dir;
  const std::vector<int32_t> tokens = {0, 1, 50256, 65535, 464, 3290};
  write_llmc_tokens(dir.file("v1.bin"), tokens, 1);
  const std::string bytes = read_file_bytes(dir.file("v1.bin"));
  ASSERT_EQ(bytes.size(), 1024 + 2 * tokens.size());
  int32_t header[3];
  std::memcpy(header, bytes.data(), 12);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], int32_t(tokens.size()));
  const TokenDataset d = TokenDataset::open(dir.file("v1.bin"));
  EXPECT_FALSE(d.byte_level());
  EXPECT_EQ(d.size(), int64_t(tokens.size()));
  EXPECT_EQ(read_all(d), tokens);
}

TEST(TokenFile, Version2RoundTrip) {
  TempDir dir;
  const std::vector<int32_t> tokens = {128000, 0, 70000, 2147483647, 12};
  write_llmc_tokens(dir.file("v2.bin"), tokens, 2);
  EXPECT_EQ(read_file_bytes(dir.file("v2.bin")).size(), 1024 + 4 * tokens.size());
  const TokenDataset d = TokenDataset::open(dir.file("v2.bin"));
  EXPECT_FALSE(d.byte_level());
  EXPECT_EQ(read_all(d), tokens);
}

TEST(TokenFile, WriteRejectsTokensThatDoNotFit) {
  TempDir dir;
  EXPECT_THROW(write_llmc_tokens(dir.file("a.bin"), std::vector<int32_t>{1, 65536}, 1), ConfigError);
  EXPECT_THROW(write_llmc_tokens(dir.file("a.bin"), std::vector<int32_t>{-1}, 2), ConfigError);
  EXPECT_THROW(write_llmc_tokens(dir.file("a.bin"), std::vector<int32_t>{1}, 3), ConfigError);
  EXPECT_THROW(write_llmc_tokens(dir.file("a.bin"), std::vector<int32_t>{}, 1), ConfigError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("a.bin")));
}

TEST(TokenFile, PlainTextIsBytes) {
  TempDir dir;
  const std::string text = "First Citizen:\nBefore we proceed, h\xc3\xa9 \xe2\x82\xac!";
  const TokenDataset d = TokenDataset::open(dir.write("input.txt", text));
  EXPECT_TRUE(d.byte_level());
  const std::vector<int32_t> tokens = read_all(d);
  ASSERT_EQ(tokens.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(tokens[i], int32_t(static_cast<unsigned char>(text[i]))) << i;
  EXPECT_EQ(read_all(TokenDataset::open(dir.write("one.txt", "x"))), std::vector<int32_t>{'x'});
}

// Shards named by a glob are one data set in sorted order (not the order the directory lists them),
// and reads across a shard boundary see the concatenation.
TEST(TokenFile, GlobOfShardsIsTheirConcatenationInSortedOrder) {
  TempDir dir;
  std::vector<int32_t> all;
  const int sizes[] = {5, 1, 9};
  for (int k : {2, 0, 1}) {  // written out of order
    std::vector<int32_t> shard;
    for (int i = 0; i < sizes[k]; ++i) shard.push_back(1000 * k + i);
    write_llmc_tokens(dir.file("train_00000" + std::to_string(k) + ".bin"), shard, k == 1 ? 2 : 1);
  }
  for (int k = 0; k < 3; ++k)
    for (int i = 0; i < sizes[k]; ++i) all.push_back(1000 * k + i);
  write_llmc_tokens(dir.file("val_000000.bin"), std::vector<int32_t>{7, 7}, 1);
  const TokenDataset d = TokenDataset::open(dir.file("train_*.bin"));
  EXPECT_EQ(d.paths().size(), 3u);
  EXPECT_EQ(d.size(), 15);
  EXPECT_EQ(read_all(d), all);
  for (int64_t start = 0; start < 15; ++start)
    for (int64_t n = 0; start + n <= 15; ++n) {
      std::vector<int32_t> got(static_cast<size_t>(n));
      d.read(start, n, got.data(), kAnyVocab);
      ASSERT_EQ(got, std::vector<int32_t>(all.begin() + start, all.begin() + start + n)) << start << "+" << n;
    }
  EXPECT_THROW(d.read(10, 6, std::vector<int32_t>(6).data(), kAnyVocab), ShapeError);

  expect_open_error(dir.file("nothing_*.bin"), {"nothing_*.bin", "no file matches"});
  // a file whose name has glob characters is itself, not a pattern
  EXPECT_EQ(read_all(TokenDataset::open(dir.write("notes[1].txt", "ab"))), (std::vector<int32_t>{'a', 'b'}));
  dir.write("mixed_0.txt", "some text");
  write_llmc_tokens(dir.file("mixed_1.bin"), std::vector<int32_t>{1}, 1);
  expect_open_error(dir.file("mixed_*"), {"mixed_1.bin", "llm.c token file", "mixed_0.txt", "plain text"});
}

// A token beyond the vocabulary is an error naming the file and its position in that file, found by
// the read that meets it, not by a scan of the whole data set at open.
TEST(TokenFile, TokensBeyondTheVocabularyNameFileAndPosition) {
  TempDir dir;
  write_llmc_tokens(dir.file("a_0.bin"), std::vector<int32_t>{1, 2, 3}, 1);
  write_llmc_tokens(dir.file("a_1.bin"), std::vector<int32_t>{4, 60000, 5}, 1);
  write_llmc_tokens(dir.file("a_2.bin"), std::vector<int32_t>{6, int32_t(2147483647)}, 2);
  const TokenDataset d = TokenDataset::open(dir.file("a_*.bin"));
  std::vector<int32_t> got(4);
  d.read(0, 4, got.data(), 50257);  // before the bad token: fine
  EXPECT_EQ(got, (std::vector<int32_t>{1, 2, 3, 4}));
  try {
    d.read(2, 4, got.data(), 50257);
    ADD_FAILURE() << "token 60000 read without error";
  } catch (const IoError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("a_1.bin: token 60000 at position 1 of this file"), std::string::npos) << m;
    EXPECT_NE(m.find("vocabulary of 50257"), std::string::npos) << m;
  }
  EXPECT_THROW(d.check(6, 2, 65536), IoError);  // 2^31-1 is beyond 65536
  EXPECT_NO_THROW(d.check(0, 8, kAnyVocab));
  // uint32 ids beyond int32 are refused whatever the vocabulary
  std::string v2 = llmc_bytes(20240520, 2, 2, std::string("\x01\x00\x00\x00\xff\xff\xff\xff", 8));
  const TokenDataset big = TokenDataset::open(dir.write("big.bin", v2));
  EXPECT_THROW(big.check(0, 2, kAnyVocab), IoError);
}

TEST(TokenFile, CorruptFilesGiveIoError) {
  TempDir dir;
  const std::string three_v1("\x01\x00\x02\x00\x03\x00", 6);
  expect_open_error(dir.file("missing.bin"), {"missing.bin", "cannot open"});
  expect_open_error(dir.write("empty.bin", ""), {"empty.bin", "empty"});
  expect_open_error(dir.write("version.bin", llmc_bytes(20240520, 7, 3, three_v1)), {"version.bin", "version 7"});
  expect_open_error(dir.write("trunc.bin", llmc_bytes(20240520, 1, 4, three_v1)), {"trunc.bin", "4 tokens", "truncated"});
  expect_open_error(dir.write("long.bin", llmc_bytes(20240520, 1, 2, three_v1)), {"long.bin", "2 tokens"});
  expect_open_error(dir.write("zero.bin", llmc_bytes(20240520, 2, 0, "")), {"zero.bin", "0 tokens"});
  expect_open_error(dir.write("negative.bin", llmc_bytes(20240520, 2, -5, "")), {"negative.bin", "-5 tokens"});
  expect_open_error(dir.write("header.bin", llmc_bytes(20240520, 1, 3, "").substr(0, 100)), {"header.bin", "header"});
  // A binary header with a wrong magic (here llm.c's model-file magic) is neither llm.c tokens nor text.
  expect_open_error(dir.write("magic.bin", llmc_bytes(20240326, 1, 3, three_v1)), {"magic.bin", "20240326", "NUL"});
  // one bad shard in a glob fails the data set, naming that shard
  write_llmc_tokens(dir.file("s_0.bin"), std::vector<int32_t>{1, 2}, 1);
  dir.write("s_1.bin", llmc_bytes(20240520, 1, 9, three_v1));
  expect_open_error(dir.file("s_*.bin"), {"s_1.bin", "9 tokens"});
}

}  // namespace
}  // namespace tensorpar::io
