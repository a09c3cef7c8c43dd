// ByteTokenizer, split points, added-token matching, and choosing the tokenizer of a model directory.
#include "tensorpar/io/tokenizer.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

namespace fs = std::filesystem;

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    TP_CHECK(ids[i] >= 0 && ids[i] < 256, ConfigError,
             "byte tokenizer: token id {} at position {} is outside the byte vocabulary [0, 256)", ids[i], i);
    out[i] = char(ids[i]);
  }
  return out;
}

size_t next_split_point(std::string_view text, size_t from) {
  auto graphic = [](char c) { return c > ' ' && c < 0x7f; };
  for (size_t p = std::max<size_t>(from, 2); p < text.size(); ++p) {
    p = text.find('\n', p - 1);
    if (p == std::string_view::npos) return p;
    ++p;  // just after the newline
    if (p < text.size() && p >= 2 && graphic(text[p - 2]) && graphic(text[p])) return p;
  }
  return std::string_view::npos;
}

void AddedTokens::add(std::string text, int32_t id) {
  ids_.insert(id);
  const auto it = std::find_if(tokens_.begin(), tokens_.end(), [&](const auto& t) { return t.first == text; });
  if (it != tokens_.end()) return;
  tokens_.emplace_back(std::move(text), id);
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

bool AddedTokens::any_contains(char c) const {
  return std::any_of(tokens_.begin(), tokens_.end(),
                     [c](const auto& t) { return t.first.find(c) != std::string::npos; });
}

namespace {

// pre_tokenizer.type and model.type of a tokenizer.json, "" where unreadable (the loader then reports).
std::pair<std::string, std::string> tokenizer_json_kind(const fs::path& path) {
  std::ifstream in(path);
  std::pair<std::string, std::string> kind;
  try {
    const auto j = nlohmann::json::parse(in);
    if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object())
      kind.first = j["pre_tokenizer"].value("type", std::string());
    if (j.contains("model") && j["model"].is_object()) kind.second = j["model"].value("type", std::string("BPE"));
  } catch (const nlohmann::json::exception&) {
  }
  return kind;
}

}  // namespace

std::unique_ptr<Tokenizer> read_tokenizer(const std::string& dir) {
  const fs::path d(dir), vocab = d / "vocab.json", merges = d / "merges.txt", tj = d / "tokenizer.json";
  std::error_code ec;
  if (fs::exists(vocab, ec) && fs::exists(merges, ec))
    return std::make_unique<Gpt2BpeTokenizer>(Gpt2BpeTokenizer::from_files(vocab.string(), merges.string()));
  if (!fs::exists(tj, ec)) return nullptr;
  const auto [pre, model] = tokenizer_json_kind(tj);
  if (model == "BPE" && pre != "ByteLevel" && pre != "Sequence")
    return std::make_unique<SentencePieceBpeTokenizer>(SentencePieceBpeTokenizer::from_tokenizer_json(tj.string()));
  // GPT-2's loader names what is wrong with anything else (unreadable, another model type, ...).
  return std::make_unique<Gpt2BpeTokenizer>(Gpt2BpeTokenizer::from_tokenizer_json(tj.string()));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, int64_t model_vocab_size) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = read_tokenizer(model_dir);
  } catch (const ConfigError& e) {  // a tokenizer of a kind we do not run: bytes still serve a byte-level model
    TP_CHECK(model_vocab_size == 256, ConfigError, "{} and the model's vocab size {} is not 256 (byte level)", e.what(),
             model_vocab_size);
    return std::make_unique<ByteTokenizer>();
  }
  if (!tok) {
    TP_CHECK(model_vocab_size == 256, ConfigError,
             "{}: no tokenizer found (vocab.json + merges.txt or tokenizer.json) and the model's vocab size {} is not "
             "256, so bytes cannot be used as tokens; copy the tokenizer files into the model directory",
             model_dir, model_vocab_size);
    return std::make_unique<ByteTokenizer>();
  }
  TP_CHECK(tok->vocab_size() <= model_vocab_size, ConfigError,
           "{}: tokenizer has {} tokens but the model's vocab size is {}; the tokenizer does not belong to this model",
           model_dir, tok->vocab_size(), model_vocab_size);
  return tok;
}

}  // namespace tensorpar::io
