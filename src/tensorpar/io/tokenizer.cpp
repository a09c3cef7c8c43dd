// ByteTokenizer and load_tokenizer: choosing the tokenizer that goes with a model directory.
#include "tensorpar/io/tokenizer.hpp"

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

namespace {

// model.type of a tokenizer.json, or "" if unreadable (the BPE loader then reports the details).
std::string tokenizer_json_model_type(const fs::path& path) {
  std::ifstream in(path);
  try {
    const auto j = nlohmann::json::parse(in);
    if (j.contains("model") && j["model"].is_object() && j["model"].contains("type") && j["model"]["type"].is_string())
      return j["model"]["type"].get<std::string>();
  } catch (const nlohmann::json::exception&) {
  }
  return "";
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, int64_t model_vocab_size) {
  const fs::path dir(model_dir), vocab = dir / "vocab.json", merges = dir / "merges.txt", tj = dir / "tokenizer.json";
  std::error_code ec;
  std::unique_ptr<Tokenizer> tok;
  std::string source;
  if (fs::exists(vocab, ec) && fs::exists(merges, ec)) {
    tok = std::make_unique<Gpt2BpeTokenizer>(Gpt2BpeTokenizer::from_files(vocab.string(), merges.string()));
    source = vocab.string();
  } else if (fs::exists(tj, ec)) {
    const std::string type = tokenizer_json_model_type(tj);
    if (type == "BPE" || type.empty()) {  // empty: let the loader name what is wrong with the file
      tok = std::make_unique<Gpt2BpeTokenizer>(Gpt2BpeTokenizer::from_tokenizer_json(tj.string()));
      source = tj.string();
    } else {
      TP_CHECK(model_vocab_size == 256, ConfigError,
               "{}: tokenizer model type '{}' is not supported (only GPT-2 byte-level BPE) and the model's vocab size "
               "{} is not 256 (byte level); provide vocab.json + merges.txt",
               tj.string(), type, model_vocab_size);
    }
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
           source, tok->vocab_size(), model_vocab_size);
  return tok;
}

}  // namespace tensorpar::io
