// Tokenizers: text <-> token ids. ByteTokenizer (id = byte, vocab 256) for byte-level models trained
// on plain text, and GPT-2 byte-level BPE matching Hugging Face's GPT2Tokenizer, loaded from
// vocab.json + merges.txt or a tokenizer.json. load_tokenizer picks one for a model directory.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace tensorpar::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Bytes of the decoded text. Ids that end mid-way through a multi-byte character give a partial
  // UTF-8 sequence (so a stream of decoded pieces concatenates to the right text). ConfigError on ids
  // outside the vocabulary.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
};

class ByteTokenizer : public Tokenizer {  // id = byte value, vocab 256
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return 256; }
};

// GPT-2 byte-level BPE, as HF GPT2Tokenizer: text is split by the GPT-2 pre-tokenizer pattern
// (gpt2_pretokenizer.hpp), each piece's bytes are mapped to printable characters (bytes_to_unicode),
// then merged by rank. Special tokens (tokenizer.json "added_tokens", or "<|endoftext|>" in
// vocab.json) occurring in the text are matched whole before splitting, as HF does.
class Gpt2BpeTokenizer : public Tokenizer {
 public:
  // IoError for a missing or malformed file (naming the file and the line/key).
  static Gpt2BpeTokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);
  // HF fast tokenizer file; ConfigError unless model.type == "BPE" with a ByteLevel pre-tokenizer.
  static Gpt2BpeTokenizer from_tokenizer_json(const std::string& tokenizer_json);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }  // largest id + 1

  std::optional<int32_t> token_to_id(std::string_view token) const;  // e.g. "<|endoftext|>"
  const std::string& id_to_token(int32_t id) const;                  // the vocab string ("Ġworld")

 private:
  Gpt2BpeTokenizer() = default;
  static Gpt2BpeTokenizer from_tokenizer_json(const std::string& tokenizer_json, const nlohmann::json& j);
  // id_limit bounds the ids (and so id_to_token_'s size) by the file's own token count: a corrupt id
  // such as 2e9 must be refused, not allocate 64 GB.
  void add_token(const std::string& source, const std::string& token, int64_t id, int64_t id_limit);
  void add_merge(const std::string& source, size_t line, const std::string& a, const std::string& b);
  void finish(const std::string& source);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int32_t> merge_rank_;  // "a b" -> rank (symbols never contain ' ')
  std::vector<std::string> special_tokens_;              // matched whole in the input text
  std::unordered_set<int32_t> special_ids_;              // decoded as their literal text
};

// GPT-2 BPE when model_dir has vocab.json + merges.txt or a BPE tokenizer.json; else ByteTokenizer if
// model_vocab_size == 256; else ConfigError. Also ConfigError if the tokenizer's vocabulary is larger
// than the model's (its ids would index past the embedding).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, int64_t model_vocab_size);

}  // namespace tensorpar::io
