// Tokenizers: the GPT-2 pre-tokenizer against splits produced by Python's `regex` module with the
// GPT-2 pattern (test_tokenizer_reference.cpp compares whole tokenizers with independent ones); BPE merges by rank on a tiny hand-built vocabulary (vocab.json/merges.txt and the
// same as tokenizer.json); decode(encode(x)) == x for UTF-8 and arbitrary bytes; load_tokenizer's choice.
#include "tensorpar/io/tokenizer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/gpt2_pretokenizer.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::TempDir;

TEST(Gpt2Pretokenizer, MatchesPythonRegexSplits) {
  // Expected pieces: regex.findall(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""", text)
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
    {"Hello world's  end\012\012  x 123abc don't!!", {"Hello", " world", "'s", " ", " end", "\012\012 ", " x", " 123", "abc", " don", "'t", "!!"}},
    {"a\011b  ", {"a", "\011", "b", "  "}},
    {"h\303\251llo w\303\266rld \346\227\245\346\234\254\350\252\236 \302\275 \342\200\224 ok \342\200\234quoted\342\200\235 it\342\200\231s", {"h\303\251llo", " w\303\266rld", " \346\227\245\346\234\254\350\252\236", " \302\275", " \342\200\224", " ok", " \342\200\234", "quoted", "\342\200\235", " it", "\342\200\231", "s"}},
    {"I'll've 'Re  \012", {"I", "'ll", "'ve", " '", "Re", "  \012"}},
    {" ", {" "}},
    {"\012", {"\012"}},
    {"x \302\240y", {"x", " ", "\302\240", "y"}},
    {"emoji \360\237\230\200\360\237\230\200 ok", {"emoji", " \360\237\230\200\360\237\230\200", " ok"}},
    {"\331\243\331\244 \340\245\251\340\245\252 \342\221\240", {"\331\243\331\244", " \340\245\251\340\245\252", " \342\221\240"}},
    {"caf\303\251\314\201 na\303\257ve", {"caf\303\251", "\314\201", " na\303\257ve"}},
    {"  leading\015\012\015\012trailing   ", {" ", " leading", "\015\012\015", "\012", "trailing", "   "}},
    {"$9.99 (50%) x=1+2;", {"$", "9", ".", "99", " (", "50", "%)", " x", "=", "1", "+", "2", ";"}},
  };
  for (const auto& [text, want] : cases) {
    const auto pieces = gpt2_pretokenize(text);
    EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.end()), want) << "text: " << text;
  }
  EXPECT_TRUE(gpt2_pretokenize("").empty());
}

// GPT-2's bytes_to_unicode, written out independently of the library: the character each byte maps to.
std::vector<std::string> reference_byte_symbols() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xa1; b <= 0xac; ++b) bs.push_back(b);
  for (int b = 0xae; b <= 0xff; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  // GPT-2's vocab lists the byte symbols first, in this bs order; return them in that order.
  std::vector<std::string> out;
  for (int cp : cs) {
    std::string s;
    if (cp < 0x80) s += char(cp);
    else { s += char(0xc0 | (cp >> 6)); s += char(0x80 | (cp & 0x3f)); }
    out.push_back(s);
  }
  return out;
}

const char* kG = "\xc4\xa0";  // 'Ġ' (U+0120): the symbol for a space byte
// Merges in rank order; "l l" outranks "he l", so "hello" must go he|l|l|o -> he|ll|o -> hell|o -> hello.
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"h", "e"}, {kG, "w"}, {"l", "l"}, {"he", "l"}, {"o", "r"}, {std::string(kG) + "w", "or"},
    {std::string(kG) + "wor", "l"}, {std::string(kG) + "worl", "d"}, {"he", "ll"}, {"hell", "o"}};
constexpr int32_t kHello = 256 + 9, kWorld = 256 + 7, kHell = 256 + 8, kHe = 256, kEot = 266;

nlohmann::ordered_json tiny_vocab() {
  nlohmann::ordered_json v = nlohmann::ordered_json::object();
  const auto bytes = reference_byte_symbols();
  for (size_t i = 0; i < bytes.size(); ++i) v[bytes[i]] = int(i);
  for (size_t k = 0; k < kMerges.size(); ++k) v[kMerges[k].first + kMerges[k].second] = int(256 + k);
  v["<|endoftext|>"] = kEot;
  return v;
}

void write_files(const TempDir& dir) {
  dir.write("vocab.json", tiny_vocab().dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : kMerges) merges += a + " " + b + "\n";
  dir.write("merges.txt", merges);
}

nlohmann::ordered_json tiny_tokenizer_json(bool pair_merges) {
  nlohmann::ordered_json merges = nlohmann::ordered_json::array();
  for (const auto& [a, b] : kMerges) {
    if (pair_merges) merges.push_back({a, b});
    else merges.push_back(a + " " + b);
  }
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", kEot}, {"content", "<|endoftext|>"}, {"special", true}}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", tiny_vocab()}, {"merges", merges}}}};
}

const std::vector<std::string> kRoundTripTexts = {
    "hello world",
    "Hello, w\xc3\xb6rld! \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 don't  stop\n\n\tnow 12345 \xc2\xbd",
    "I'll've 'Re they're   \r\n  trailing   ",
    "hello<|endoftext|>world<|endoftext|>",
    "",
};

void check_bpe(const Gpt2BpeTokenizer& tok) {
  EXPECT_EQ(tok.vocab_size(), 267);
  EXPECT_EQ(tok.encode("hello world"), (std::vector<int32_t>{kHello, kWorld}));
  EXPECT_EQ(tok.encode("hello world<|endoftext|>hell"), (std::vector<int32_t>{kHello, kWorld, kEot, kHell}));
  // "he" then " " then "l": the space stops merges across pieces.
  const auto ids = tok.encode("he l");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], kHe);
  EXPECT_EQ(tok.id_to_token(ids[1]), kG);
  EXPECT_EQ(tok.id_to_token(ids[2]), "l");
  EXPECT_EQ(tok.id_to_token(kWorld), std::string(kG) + "world");
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), kEot);
  EXPECT_FALSE(tok.token_to_id("nope").has_value());
  for (const auto& text : kRoundTripTexts) {
    const auto enc = tok.encode(text);
    EXPECT_EQ(tok.decode(enc), text);
  }
  // Arbitrary bytes, including invalid UTF-8, survive the round trip because every byte has a symbol.
  uint64_t s = 99;
  for (int trial = 0; trial < 200; ++trial) {
    std::string text(size_t(trial % 40), '\0');
    for (auto& c : text) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      c = char(s >> 56);
    }
    ASSERT_EQ(tok.decode(tok.encode(text)), text) << "trial " << trial;
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{267}), ConfigError);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), ConfigError);
}

TEST(Gpt2Bpe, FromVocabAndMerges) {
  TempDir dir;
  write_files(dir);
  check_bpe(Gpt2BpeTokenizer::from_files(dir.file("vocab.json"), dir.file("merges.txt")));
}

TEST(Gpt2Bpe, FromTokenizerJson) {
  TempDir dir;
  dir.write("a.json", tiny_tokenizer_json(false).dump());
  dir.write("b.json", tiny_tokenizer_json(true).dump());
  check_bpe(Gpt2BpeTokenizer::from_tokenizer_json(dir.file("a.json")));
  check_bpe(Gpt2BpeTokenizer::from_tokenizer_json(dir.file("b.json")));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Gpt2Bpe, BadFilesGiveErrorsNamingTheFile) {
  TempDir dir;
  write_files(dir);
  dir.write("bad_merges.txt", "#version: 0.2\nh e\nhe l l\n");
  std::string msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("vocab.json"), dir.file("bad_merges.txt")); });
  EXPECT_NE(msg.find("bad_merges.txt: line 3"), std::string::npos) << msg;
  dir.write("array.json", "[1, 2]");
  msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("array.json"), dir.file("merges.txt")); });
  EXPECT_NE(msg.find("array.json"), std::string::npos) << msg;
  dir.write("badid.json", R"({"a": "x"})");
  msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("badid.json"), dir.file("merges.txt")); });
  EXPECT_NE(msg.find("badid.json: token 'a'"), std::string::npos) << msg;
  msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("missing.json"), dir.file("merges.txt")); });
  EXPECT_NE(msg.find("missing.json: cannot open"), std::string::npos) << msg;

  auto wordpiece = tiny_tokenizer_json(false);
  wordpiece["model"]["type"] = "WordPiece";
  dir.write("wp.json", wordpiece.dump());
  EXPECT_THROW(Gpt2BpeTokenizer::from_tokenizer_json(dir.file("wp.json")), ConfigError);
  auto prefix = tiny_tokenizer_json(false);
  prefix["pre_tokenizer"]["add_prefix_space"] = true;
  dir.write("prefix.json", prefix.dump());
  msg = error_of([&] { Gpt2BpeTokenizer::from_tokenizer_json(dir.file("prefix.json")); });
  EXPECT_NE(msg.find("prefix.json: pre_tokenizer"), std::string::npos) << msg;
  dir.write("broken.json", "{\"model\": ");
  EXPECT_THROW(Gpt2BpeTokenizer::from_tokenizer_json(dir.file("broken.json")), IoError);

  // A vocabulary lacking a byte symbol could not encode that byte: refused when loading.
  auto partial = tiny_vocab();
  partial.erase("z");
  dir.write("partial.json", partial.dump());
  msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("partial.json"), dir.file("merges.txt")); });
  EXPECT_NE(msg.find("partial.json: the vocabulary has no symbol for byte 122"), std::string::npos) << msg;
  // A merge whose parts or result are not in the vocabulary is refused, as Hugging Face does.
  dir.write("unknown_merge.txt", "#version: 0.2\nh e\nq q\n");
  msg = error_of([&] { Gpt2BpeTokenizer::from_files(dir.file("vocab.json"), dir.file("unknown_merge.txt")); });
  EXPECT_NE(msg.find("unknown_merge.txt: merge 3 ('q' 'q')"), std::string::npos) << msg;
}

TEST(ByteTokenizer, RoundTripAndRange) {
  const ByteTokenizer tok;
  const std::string text = "caf\xc3\xa9\n\x01\xff";
  const auto ids = tok.encode(text);
  EXPECT_EQ(ids, (std::vector<int32_t>{'c', 'a', 'f', 0xc3, 0xa9, '\n', 1, 255}));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{256}), ConfigError);
}

TEST(LoadTokenizer, PicksByDirectoryContents) {
  TempDir files, json, other, empty;
  write_files(files);
  json.write("tokenizer.json", tiny_tokenizer_json(true).dump());
  auto wordpiece = tiny_tokenizer_json(false);
  wordpiece["model"]["type"] = "WordPiece";
  other.write("tokenizer.json", wordpiece.dump());

  for (const TempDir* d : {&files, &json}) {
    const auto tok = load_tokenizer(d->path().string(), 50304);
    ASSERT_NE(dynamic_cast<const Gpt2BpeTokenizer*>(tok.get()), nullptr);
    EXPECT_EQ(tok->encode("hello world"), (std::vector<int32_t>{kHello, kWorld}));
    EXPECT_THROW(load_tokenizer(d->path().string(), 100), ConfigError);  // tokenizer larger than the model
  }
  for (const TempDir* d : {&other, &empty}) {
    const auto tok = load_tokenizer(d->path().string(), 256);
    EXPECT_NE(dynamic_cast<const ByteTokenizer*>(tok.get()), nullptr);
    EXPECT_THROW(load_tokenizer(d->path().string(), 50257), ConfigError);
  }
}

}  // namespace
}  // namespace tensorpar::io
