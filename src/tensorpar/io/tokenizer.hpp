// Tokenizers: text <-> token ids. ByteTokenizer (id = byte, vocab 256) for byte-level models trained
// on plain text; GPT-2 byte-level BPE matching Hugging Face's GPT2Tokenizer (vocab.json + merges.txt
// or a ByteLevel tokenizer.json); SentencePiece-style BPE as Hugging Face's LlamaTokenizerFast (a
// tokenizer.json with "▁" for spaces and byte fallback). load_tokenizer picks one for a model directory.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "tensorpar/io/bpe_tokenizer_model.hpp"

namespace tensorpar::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // A whole text, as Hugging Face's tokenizer(text) with its special tokens (Llama: BOS first).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // The rest of a text whose beginning was encoded already (no BOS, no SentencePiece prefix space):
  // encode(a + b) == encode(a) ++ encode_continuation(b) when a.size() is a split point (below).
  virtual std::vector<int32_t> encode_continuation(std::string_view text) const { return encode(text); }
  // Whether cutting after a '\n' preceded and followed by printable ASCII (next_split_point) keeps
  // encoding exact; false when the vocabulary merges across newlines.
  virtual bool splits_at_newlines() const { return true; }
  // Bytes of the decoded text. Ids that end mid-way through a multi-byte character give a partial
  // UTF-8 sequence (so a stream of decoded pieces concatenates to the right text). ConfigError on ids
  // outside the vocabulary.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // The token training files put before every document when encode() marks no start itself:
  // GPT-2's <|endoftext|>, as llm.c's data scripts do. None for Llama (encode adds BOS) and bytes.
  virtual std::optional<int32_t> document_separator() const { return std::nullopt; }
};

// The first position p >= from with text[p-1] == '\n' and text[p-2], text[p] printable ASCII, or npos.
// A GPT-2-pattern piece always ends there, so a text can be encoded in parts cut at such points.
size_t next_split_point(std::string_view text, size_t from);

class ByteTokenizer : public Tokenizer {  // id = byte value, vocab 256
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return 256; }
};

// Added tokens ("<|endoftext|>", "<s>") matched whole in the text before anything else, as Hugging
// Face does; the longest wins at equal positions.
class AddedTokens {
 public:
  void add(std::string text, int32_t id);
  bool empty() const { return tokens_.empty(); }
  bool contains_id(int32_t id) const { return ids_.count(id) != 0; }
  bool any_contains(char c) const;
  // Calls text_fn(segment, first) for the text between added tokens and id_fn(id) for each added token.
  template <class TextFn, class IdFn>
  void split(std::string_view text, TextFn&& text_fn, IdFn&& id_fn) const;

 private:
  std::vector<std::pair<std::string, int32_t>> tokens_;  // longest first
  std::unordered_set<int32_t> ids_;
};

// GPT-2 byte-level BPE, as HF GPT2Tokenizer: text is split by the GPT-2 pre-tokenizer pattern
// (gpt2_pretokenizer.hpp), each piece's bytes are mapped to printable characters (bytes_to_unicode),
// then merged by rank (pieces cached per thread). Added tokens (tokenizer.json "added_tokens", or
// "<|endoftext|>" in vocab.json) occurring in the text are matched whole before splitting.
class Gpt2BpeTokenizer : public Tokenizer {
 public:
  // IoError for a missing or malformed file (naming the file and the line/key).
  static Gpt2BpeTokenizer from_files(const std::string& vocab_json, const std::string& merges_txt);
  // HF fast tokenizer file; ConfigError unless model.type == "BPE" with a ByteLevel pre-tokenizer.
  static Gpt2BpeTokenizer from_tokenizer_json(const std::string& tokenizer_json);

  std::vector<int32_t> encode(std::string_view text) const override;
  bool splits_at_newlines() const override { return !added_.any_contains('\n'); }
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return bpe_.size(); }
  std::optional<int32_t> document_separator() const override { return token_to_id("<|endoftext|>"); }

  std::optional<int32_t> token_to_id(std::string_view token) const { return bpe_.find(token); }
  const std::string& id_to_token(int32_t id) const { return bpe_.token(id); }  // the vocab string ("Ġworld")

 private:
  Gpt2BpeTokenizer() = default;
  void finish(const std::string& source);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  BpeModel bpe_;
  AddedTokens added_;
  int32_t byte_ids_[256];  // the id of each byte's symbol
};

// SentencePiece-style BPE from a Hugging Face tokenizer.json, as LlamaTokenizerFast (Llama 1/2, Mistral,
// TinyLlama...): spaces become "▁" and one "▁" is prepended (either the Prepend + Replace normalizers or
// the Metaspace pre-tokenizer), the text is split into characters (a character missing from the vocabulary
// becomes its <0xXX> byte tokens, or <unk> without byte_fallback), merged by rank, and the
// post_processor's template adds BOS (and EOS if it says so). Added tokens are matched whole first.
class SentencePieceBpeTokenizer : public Tokenizer {
 public:
  // IoError for a missing or malformed file; ConfigError for a tokenizer.json of another kind.
  static SentencePieceBpeTokenizer from_tokenizer_json(const std::string& tokenizer_json);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::vector<int32_t> encode_continuation(std::string_view text) const override;
  bool splits_at_newlines() const override { return newline_is_barrier_; }
  // Byte tokens become their bytes, "▁" a space. A leading BOS is dropped with the one space the encoder
  // prepended (so decode(encode(x)) == x, and decoding generated tokens alone keeps their spaces);
  // other added tokens are written as their text.
  std::string decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return bpe_.size(); }

  std::optional<int32_t> token_to_id(std::string_view token) const { return bpe_.find(token); }
  const std::string& id_to_token(int32_t id) const { return bpe_.token(id); }

 private:
  SentencePieceBpeTokenizer() = default;
  void encode_text(std::string_view text, bool document_start, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;

  BpeModel bpe_;
  AddedTokens added_;
  bool replace_spaces_ = false;   // " " -> "▁"
  bool prepend_ = false;          // prepend "▁" to the text
  bool prepend_always_ = true;    // even if it starts with "▁" already (normalizer form; Metaspace: false)
  bool prepend_each_segment_ = true;  // also after an added token (Prepend normalizer, Metaspace "always")
  bool split_words_ = false;      // Metaspace split: each "▁" starts a new word
  bool byte_fallback_ = false;
  std::optional<int32_t> unk_;
  std::vector<int32_t> prefix_, suffix_;  // from the post_processor template
  int32_t byte_ids_[256];                 // <0xXX> tokens, -1 where missing
  bool newline_is_barrier_ = false;
  // No token has "▁" after another character (true of SentencePiece vocabularies, whose pieces start at
  // a space): then no merge crosses the start of a "▁" run, and words are encoded in pieces cut there.
  bool cut_before_space_ = false;
};

// The tokenizer in `dir`: GPT-2 BPE for vocab.json + merges.txt or a ByteLevel tokenizer.json,
// SentencePiece BPE for another BPE tokenizer.json; nullptr if the directory has none of these files.
std::unique_ptr<Tokenizer> read_tokenizer(const std::string& dir);

// read_tokenizer; ByteTokenizer if there is none, or one of an unsupported kind (ConfigError), and
// model_vocab_size == 256; else ConfigError. Also ConfigError if
// the tokenizer's vocabulary is larger than the model's (its ids would index past the embedding).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, int64_t model_vocab_size);

template <class TextFn, class IdFn>
void AddedTokens::split(std::string_view text, TextFn&& text_fn, IdFn&& id_fn) const {
  size_t pos = 0;
  bool first = true;
  while (pos <= text.size()) {
    size_t found = std::string_view::npos;
    const std::pair<std::string, int32_t>* which = nullptr;
    for (const auto& t : tokens_) {
      const size_t at = text.find(t.first, pos);
      if (at < found) {
        found = at;
        which = &t;
      }
    }
    const size_t end = which ? found : text.size();
    if (end > pos) text_fn(text.substr(pos, end - pos), first);
    first = false;
    if (!which) break;
    id_fn(which->second);
    pos = found + which->first.size();
  }
}

}  // namespace tensorpar::io
