// `tensorpar tokenize` end to end: the token file written at 1 and 2 threads, with chunks small enough
// that every document is cut many times, equals the serial encoding computed here (GPT-2: <|endoftext|>
// before each document; Llama: encode() starts each with BOS); shards concatenate to the whole; a
// vocabulary over 65536 gives uint32 tokens; bad input gives one error line and no output file.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/cli_runner.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/io/tokenizer.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;

// Every token of an llm.c file (or glob), as the training data loader reads them.
std::vector<int32_t> read_all_tokens(const std::string& path) {
  const io::TokenDataset data = io::TokenDataset::open(path);
  std::vector<int32_t> tokens(size_t(data.size()));
  data.read(0, data.size(), tokens.data(), io::kMaxTokenVocab);
  return tokens;
}
using testing::run_cli;

const std::string kTokenizers = std::string(TENSORPAR_SOURCE_DIR) + "/tests/data/tokenizers";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int32_t header_version(const std::string& path) {
  const std::string bytes = slurp(path);
  int32_t header[2] = {0, 0};
  if (bytes.size() >= 8) std::memcpy(header, bytes.data(), 8);
  EXPECT_EQ(header[0], io::kLlmcTokenMagic) << path;
  return header[1];
}

class Tokenize : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tensorpar_cli_tokenize_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // Three documents: the multilingual corpus many times over (with a counter, so pieces differ), a short
    // text without a final newline, and an empty file.
    const std::string corpus = slurp(kTokenizers + "/corpus.txt");
    ASSERT_FALSE(corpus.empty()) << kTokenizers << "/corpus.txt is missing";
    std::string big;
    for (int i = 0; i < 30; ++i) big += "Section " + std::to_string(i) + ":\n" + corpus;
    inputs_ = {path("big.txt"), path("short.txt"), path("empty.txt")};
    std::ofstream(inputs_[0], std::ios::binary) << big;
    std::ofstream(inputs_[1], std::ios::binary) << "It was the best of times,\nit was the worst of times.";
    std::ofstream(inputs_[2], std::ios::binary);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string input_args() const { return inputs_[0] + " " + inputs_[1] + " " + inputs_[2]; }

  // What the files must hold: each document encoded whole, serially, in this process.
  std::vector<int32_t> serial(const std::string& tokenizer_dir) const {
    const auto tok = io::read_tokenizer(tokenizer_dir);
    std::vector<int32_t> all;
    for (const auto& in : inputs_) {
      if (const auto sep = tok->document_separator()) all.push_back(*sep);
      const auto ids = tok->encode(slurp(in));
      all.insert(all.end(), ids.begin(), ids.end());
    }
    return all;
  }

  void expect_threads_equal_serial(const std::string& name) {
    const std::string tok_dir = kTokenizers + "/" + name;
    const auto want = serial(tok_dir);
    for (int threads : {1, 2}) {
      const std::string out = path(name + std::to_string(threads) + ".bin");
      const auto r = run_cli(1,
                             "--threads " + std::to_string(threads) + " tokenize --tokenizer " + tok_dir + " --input " +
                                 input_args() + " --out " + out + " --chunk-size 2000",
                             dir_.string());
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_NE(r.err.find("tokenize: "), std::string::npos) << "no progress line: " << r.err;
      EXPECT_NE(r.out.find("with " + std::to_string(threads) + " threads"), std::string::npos) << r.out;
      EXPECT_EQ(header_version(out), 1) << "a vocabulary of 32000 or 50257 fits uint16";
      const auto got = read_all_tokens(out);
      EXPECT_EQ(got.size(), want.size()) << threads << " threads";
      EXPECT_TRUE(got == want) << threads << " threads: the file differs from the serial encoding";
    }
  }

  fs::path dir_;
  std::vector<std::string> inputs_;
};

TEST_F(Tokenize, Gpt2AtOneAndTwoThreadsEqualsSerialEncoding) { expect_threads_equal_serial("gpt2"); }

TEST_F(Tokenize, LlamaAtOneAndTwoThreadsEqualsSerialEncoding) { expect_threads_equal_serial("llama"); }

TEST_F(Tokenize, ShardsConcatenateToTheWhole) {
  const std::string tok_dir = kTokenizers + "/gpt2";
  const auto want = serial(tok_dir);
  const auto r = run_cli(1, "tokenize --quiet --tokenizer " + tok_dir + " --input " + input_args() + " --out " +
                                path("train.bin") + " --shard-size 5000", dir_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "") << "--quiet prints no progress";
  auto shard = [&](size_t i) {
    char name[32];
    std::snprintf(name, sizeof(name), "train_%06zu.bin", i);
    return path(name);
  };
  std::vector<int32_t> got;
  size_t shards = 0;
  for (; fs::exists(shard(shards)); ++shards) {
    const auto part = read_all_tokens(shard(shards));
    EXPECT_LE(part.size(), 5000u);
    got.insert(got.end(), part.begin(), part.end());
  }
  EXPECT_EQ(shards, (want.size() + 4999) / 5000);
  EXPECT_TRUE(got == want);
  EXPECT_FALSE(fs::exists(path("train.bin")));
}

TEST_F(Tokenize, VocabularyOver65536GivesUint32Tokens) {
  // A byte-level BPE with an end-of-text token at id 70000: every document starts with it.
  nlohmann::json vocab = nlohmann::json::object();
  const auto gpt2 = nlohmann::json::parse(slurp(kTokenizers + "/gpt2/vocab.json"));
  for (const auto& [token, id] : gpt2.items())
    if (id.get<int>() < 256) vocab[token] = id;
  vocab["<|endoftext|>"] = 70000;
  fs::create_directories(path("big_vocab"));
  std::ofstream(path("big_vocab/vocab.json")) << vocab.dump();
  std::ofstream(path("big_vocab/merges.txt")) << "#version: 0.2\n";
  const auto r = run_cli(1, "tokenize --tokenizer " + path("big_vocab") + " --input " + inputs_[1] + " --out " +
                                path("wide.bin"), dir_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(header_version(path("wide.bin")), 2);
  const auto got = read_all_tokens(path("wide.bin"));
  const std::string text = slurp(inputs_[1]);
  ASSERT_EQ(got.size(), 1 + text.size());
  EXPECT_EQ(got[0], 70000);
  EXPECT_EQ(got[1], 'I' - 33);  // byte symbols are numbered in bytes_to_unicode order: '!' is 0
}

TEST_F(Tokenize, BadInputGivesOneErrorLineAndNoFile) {
  fs::create_directories(path("no_tokenizer"));
  fs::create_directories(path("broken"));
  std::ofstream(path("broken/tokenizer.json")) << "{\"model\": ";
  const std::string ok_tok = kTokenizers + "/gpt2";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--tokenizer " + path("nowhere") + " --input " + inputs_[1] + " --out " + path("x.bin"), "not a directory"},
      {"--tokenizer " + path("no_tokenizer") + " --input " + inputs_[1] + " --out " + path("x.bin"),
       "has neither tokenizer.json"},
      {"--tokenizer " + path("broken") + " --input " + inputs_[1] + " --out " + path("x.bin"), "not valid JSON"},
      {"--tokenizer " + ok_tok + " --input " + path("missing.txt") + " --out " + path("x.bin"), "missing.txt"},
      {"--tokenizer " + ok_tok + " --input " + inputs_[1] + " --out " + path("no/such/dir/x.bin"), "not writable"},
      {"--tokenizer " + ok_tok + " --input " + inputs_[1] + " --out " + path("x.bin") + " --shard-size -1",
       "--shard-size"},
  };
  for (int ranks : {1, 2}) {
    for (const auto& [args, what] : cases) {
      const auto r = run_cli(ranks, "tokenize " + args, dir_.string());
      EXPECT_NE(r.exit_code, 0) << args;
      EXPECT_EQ(r.error_lines(), 1) << args << "\n" << r.err;
      EXPECT_NE(r.err.find(what), std::string::npos) << args << "\n" << r.err;
      EXPECT_FALSE(fs::exists(path("x.bin")));
    }
  }
}

}  // namespace
}  // namespace tensorpar
