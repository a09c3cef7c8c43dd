// Tokenizers against independent implementations on a multilingual corpus (tests/data/tokenizers):
// GPT-2 BPE against the gpt-3-encoder npm package with GPT-2's own vocab.json/merges.txt, and
// SentencePiece BPE against llama-tokenizer-js with the Llama 1/2 vocabulary (as a tokenizer.json).
// The reference ids were produced by scripts/tokenizer_fixtures.sh and are committed, so this test
// needs neither node nor a network. Also: decode(encode(x)) == x, and encoding in parts cut at split
// points equals encoding the whole (what `tensorpar tokenize` relies on for its threads).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/tokenizer.hpp"

namespace tensorpar::io {
namespace {

const std::string kDataDir = std::string(TENSORPAR_SOURCE_DIR) + "/tests/data/tokenizers";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reference files are committed; a missing one fails the test (never a skip) with how to get it back.
bool have_reference_files() {
  bool ok = true;
  for (const char* f : {"gpt2/vocab.json", "gpt2/merges.txt", "llama/tokenizer.json", "expected.json", "corpus.txt"})
    if (!std::filesystem::exists(kDataDir + "/" + f)) {
      ADD_FAILURE() << kDataDir << "/" << f << " is missing; restore it from git or regenerate the reference data with "
                    << "scripts/tokenizer_fixtures.sh (needs node and npm)";
      ok = false;
    }
  return ok;
}

struct Case {
  std::string text;
  std::vector<int32_t> gpt2, llama;
};

std::vector<Case> reference_cases() {
  const std::string path = kDataDir + "/expected.json";
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << path << " is missing; regenerate it with scripts/tokenizer_fixtures.sh (needs node and npm)";
    return {};
  }
  const auto j = nlohmann::json::parse(slurp(path));
  std::vector<Case> cases;
  for (const auto& c : j.at("cases"))
    cases.push_back({c.at("text").get<std::string>(), c.at("gpt2").get<std::vector<int32_t>>(),
                     c.at("llama").get<std::vector<int32_t>>()});
  return cases;
}

// The first index where two id lists differ, for the failure message.
std::string first_difference(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return "first difference at index " + std::to_string(i) + " of " + std::to_string(got.size()) + " vs " +
         std::to_string(want.size()) + " ids: got " + (i < got.size() ? std::to_string(got[i]) : "end") + ", want " +
         (i < want.size() ? std::to_string(want[i]) : "end");
}

// encode(text) equals encode(part 1) ++ encode_continuation(part 2) ++ ... for every split point.
void expect_split_encoding_exact(const Tokenizer& tok, const std::string& text) {
  ASSERT_TRUE(tok.splits_at_newlines());
  const auto whole = tok.encode(text);
  std::vector<int32_t> parts;
  size_t begin = 0, cuts = 0;
  for (size_t p = next_split_point(text, 1); p != std::string::npos; p = next_split_point(text, p + 1), ++cuts) {
    const auto ids = begin == 0 ? tok.encode(text.substr(0, p)) : tok.encode_continuation(text.substr(begin, p - begin));
    parts.insert(parts.end(), ids.begin(), ids.end());
    begin = p;
  }
  const auto last = begin == 0 ? tok.encode(text) : tok.encode_continuation(text.substr(begin));
  parts.insert(parts.end(), last.begin(), last.end());
  EXPECT_GE(cuts, 10u);
  EXPECT_EQ(parts, whole) << first_difference(parts, whole);
}

TEST(TokenizerReference, Gpt2MatchesGpt3EncoderOnMultilingualCorpus) {
  ASSERT_TRUE(have_reference_files());
  const auto tok = Gpt2BpeTokenizer::from_files(kDataDir + "/gpt2/vocab.json", kDataDir + "/gpt2/merges.txt");
  ASSERT_EQ(tok.vocab_size(), 50257);
  const auto cases = reference_cases();
  ASSERT_GT(cases.size(), 40u);
  size_t mismatches = 0;
  for (const auto& c : cases) {
    const auto ids = tok.encode(c.text);
    if (ids != c.gpt2) ++mismatches;
    EXPECT_EQ(ids, c.gpt2) << "text: " << c.text << "\n" << first_difference(ids, c.gpt2);
    EXPECT_EQ(tok.decode(ids), c.text);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << cases.size() << " cases";
  expect_split_encoding_exact(tok, cases.back().text);
}

TEST(TokenizerReference, LlamaMatchesLlamaTokenizerJsOnMultilingualCorpus) {
  ASSERT_TRUE(have_reference_files());
  const auto loaded = read_tokenizer(kDataDir + "/llama");
  ASSERT_NE(dynamic_cast<const SentencePieceBpeTokenizer*>(loaded.get()), nullptr)
      << "tokenizer.json with byte fallback must load as SentencePiece BPE";
  const auto& tok = *loaded;
  ASSERT_EQ(tok.vocab_size(), 32000);
  const auto cases = reference_cases();
  ASSERT_GT(cases.size(), 40u);
  size_t mismatches = 0;
  for (const auto& c : cases) {
    const auto ids = tok.encode(c.text);
    if (ids != c.llama) ++mismatches;
    EXPECT_EQ(ids, c.llama) << "text: " << c.text << "\n" << first_difference(ids, c.llama);
    EXPECT_EQ(tok.decode(ids), c.text);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << cases.size() << " cases";
  expect_split_encoding_exact(tok, cases.back().text);
}

TEST(TokenizerReference, LlamaSpecialTokensAndContinuationDecoding) {
  const auto tok = SentencePieceBpeTokenizer::from_tokenizer_json(kDataDir + "/llama/tokenizer.json");
  // Added tokens are matched whole; the normalizer prepends "▁" to the text after them too (HF's legacy Llama).
  const auto ids = tok.encode("Hi</s>there");
  const std::vector<int32_t> want = {1, *tok.token_to_id("\xe2\x96\x81Hi"), 2, *tok.token_to_id("\xe2\x96\x81there")};
  EXPECT_EQ(ids, want);
  // Decoding generated tokens alone (no BOS first) keeps their leading space, so streamed pieces concatenate.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{*tok.token_to_id("\xe2\x96\x81there")}), " there");
  EXPECT_EQ(tok.decode(tok.encode(" two  spaces ")), " two  spaces ");
  // A character outside the vocabulary falls back to its UTF-8 bytes.
  const auto rare = tok.encode("\xf0\x9f\xa6\x99");  // U+1F999 (a llama emoji, newer than the vocabulary)
  EXPECT_EQ(rare.size(), 1u + 1u + 4u);              // BOS, "▁", 4 byte tokens
  EXPECT_EQ(tok.decode(rare), "\xf0\x9f\xa6\x99");
}

TEST(TokenizerReference, Gpt2PatternUsesUnicodeWhiteSpaceAsHuggingFace) {
  const auto tok = Gpt2BpeTokenizer::from_files(kDataDir + "/gpt2/vocab.json", kDataDir + "/gpt2/merges.txt");
  // U+0085 (NEL) is White_Space (Oniguruma, Python regex, PCRE2 UCP) but not JavaScript's \s, which is why the
  // corpus leaves it out; here: "a" NEL "b" splits as a | NEL | b, so the NEL bytes are not glued to "b".
  const auto ids = tok.encode("a\xc2\x85" "b");
  EXPECT_EQ(ids.size(), 4u);  // 'a', the two bytes of U+0085 ('Â', 'ħ'), 'b'
  EXPECT_EQ(tok.decode(ids), "a\xc2\x85" "b");
  // Invalid UTF-8 still round-trips byte for byte.
  const std::string bad = "ok \xff\xfe\xc3 end";
  EXPECT_EQ(tok.decode(tok.encode(bad)), bad);
}

TEST(TokenizerReference, MetaspaceFormEqualsNormalizerFormExceptALeadingSpace) {
  // Newer conversions of Llama tokenizers put "▁" handling in a Metaspace pre-tokenizer (prepend_scheme
  // "first", split false) instead of the normalizers. Same ids, except that Metaspace does not prepend a
  // second "▁" to text that starts with a space, and does not prepend after an added token.
  auto j = nlohmann::json::parse(slurp(kDataDir + "/llama/tokenizer.json"));
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
  const std::string dir = ::testing::TempDir() + "/metaspace_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  const auto meta = read_tokenizer(dir);
  const auto norm = read_tokenizer(kDataDir + "/llama");
  std::filesystem::remove_all(dir);
  ASSERT_NE(dynamic_cast<const SentencePieceBpeTokenizer*>(meta.get()), nullptr);
  for (const auto& c : reference_cases())
    if (c.text[0] != ' ') {
      EXPECT_EQ(meta->encode(c.text), c.llama) << c.text;
    }
  const auto& sp = dynamic_cast<const SentencePieceBpeTokenizer&>(*meta);
  EXPECT_EQ(meta->encode(" x"), (std::vector<int32_t>{1, *sp.token_to_id("\xe2\x96\x81x")}));
  EXPECT_EQ(norm->encode(" x"), (std::vector<int32_t>{1, *sp.token_to_id("\xe2\x96\x81"), *sp.token_to_id("\xe2\x96\x81x")}));
  EXPECT_EQ(meta->encode("a</s>b"), (std::vector<int32_t>{1, *sp.token_to_id("\xe2\x96\x81" "a"), 2, *sp.token_to_id("b")}));
  // Split true: a word starts at every "▁", so runs of spaces no longer merge into "▁▁" tokens; text
  // without such runs keeps its ids (no Llama token has "▁" after another character).
  j["pre_tokenizer"]["split"] = true;
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  const auto split = read_tokenizer(dir);
  std::filesystem::remove_all(dir);
  size_t compared = 0;
  for (const auto& c : reference_cases())
    if (c.text[0] != ' ' && c.text.find("  ") == std::string::npos) {
      EXPECT_EQ(split->encode(c.text), c.llama) << c.text;
      ++compared;
    }
  EXPECT_GT(compared, 40u);
  const auto& sp2 = dynamic_cast<const SentencePieceBpeTokenizer&>(*split);
  const int32_t space = *sp2.token_to_id("\xe2\x96\x81");
  EXPECT_EQ(split->encode("a  b"), (std::vector<int32_t>{1, *sp2.token_to_id("\xe2\x96\x81" "a"), space, *sp2.token_to_id("\xe2\x96\x81" "b")}));
}

TEST(TokenizerReference, ModelDirectoryWithLlamaTokenizerJsonLoadsIt) {
  const auto tok = load_tokenizer(kDataDir + "/llama", 32000);
  EXPECT_NE(dynamic_cast<const SentencePieceBpeTokenizer*>(tok.get()), nullptr);
  EXPECT_THROW(load_tokenizer(kDataDir + "/llama", 31999), ConfigError);  // larger than the model's vocabulary
  EXPECT_NE(dynamic_cast<const Gpt2BpeTokenizer*>(load_tokenizer(kDataDir + "/gpt2", 50304).get()), nullptr);
}

}  // namespace
}  // namespace tensorpar::io
