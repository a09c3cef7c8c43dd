// Token files: llm.c v1/v2 round trips, plain text read as bytes, and corrupt headers rejected.
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

std::string llmc_bytes(int32_t magic, int32_t version, int32_t count, const std::string& body) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  return std::string(reinterpret_cast<const char*>(header.data()), 1024) + body;
}

void expect_load_error(const std::string& path, std::initializer_list<std::string> parts) {
  try {
    load_tokens(path);
    ADD_FAILURE() << path << ": loaded without error";
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
  const TokenData d = load_tokens(dir.file("v1.bin"));
  EXPECT_FALSE(d.byte_level);
  EXPECT_EQ(d.tokens, tokens);
}

TEST(TokenFile, Version2RoundTrip) {
  TempDir dir;
  const std::vector<int32_t> tokens = {128000, 0, 70000, 2147483647, 12};
  write_llmc_tokens(dir.file("v2.bin"), tokens, 2);
  EXPECT_EQ(read_file_bytes(dir.file("v2.bin")).size(), 1024 + 4 * tokens.size());
  const TokenData d = load_tokens(dir.file("v2.bin"));
  EXPECT_FALSE(d.byte_level);
  EXPECT_EQ(d.tokens, tokens);
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
  const TokenData d = load_tokens(dir.write("input.txt", text));
  EXPECT_TRUE(d.byte_level);
  ASSERT_EQ(d.tokens.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(d.tokens[i], int32_t(static_cast<unsigned char>(text[i]))) << i;
  const TokenData one = load_tokens(dir.write("one.txt", "x"));
  EXPECT_EQ(one.tokens, std::vector<int32_t>{'x'});
}

TEST(TokenFile, CorruptFilesGiveIoError) {
  TempDir dir;
  const std::string three_v1("\x01\x00\x02\x00\x03\x00", 6);
  expect_load_error(dir.file("missing.bin"), {"missing.bin", "cannot open"});
  expect_load_error(dir.write("empty.bin", ""), {"empty.bin", "empty"});
  expect_load_error(dir.write("version.bin", llmc_bytes(20240520, 7, 3, three_v1)), {"version.bin", "version 7"});
  expect_load_error(dir.write("trunc.bin", llmc_bytes(20240520, 1, 4, three_v1)), {"trunc.bin", "4 tokens", "truncated"});
  expect_load_error(dir.write("long.bin", llmc_bytes(20240520, 1, 2, three_v1)), {"long.bin", "2 tokens"});
  expect_load_error(dir.write("zero.bin", llmc_bytes(20240520, 2, 0, "")), {"zero.bin", "0 tokens"});
  expect_load_error(dir.write("negative.bin", llmc_bytes(20240520, 2, -5, "")), {"negative.bin", "-5 tokens"});
  expect_load_error(dir.write("header.bin", llmc_bytes(20240520, 1, 3, "").substr(0, 100)), {"header.bin", "header"});
  // A binary header with a wrong magic (here llm.c's model-file magic) is neither llm.c tokens nor text.
  expect_load_error(dir.write("magic.bin", llmc_bytes(20240326, 1, 3, three_v1)), {"magic.bin", "20240326", "NUL"});
}

}  // namespace
}  // namespace tensorpar::io
