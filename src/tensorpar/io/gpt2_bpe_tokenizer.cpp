// GPT-2 byte-level BPE (Gpt2BpeTokenizer): loading vocab.json/merges.txt or tokenizer.json, the
// bytes_to_unicode mapping, merging pieces by rank (memoised), decoding back to bytes.
#include <array>
#include <sstream>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/gpt2_pretokenizer.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/io/tokenizer_json.hpp"

namespace tensorpar::io {

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else {  // bytes_to_unicode only produces code points below 0x800
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100..U+0143,
// so every byte is a visible character and a space becomes 'Ġ' (U+0120).
struct ByteMap {
  std::array<std::string, 256> encode;  // byte -> UTF-8 of its character
  std::array<int16_t, 0x144> decode;    // code point -> byte, -1 if none
  ByteMap() {
    decode.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      append_utf8(encode[size_t(b)], cp);
      decode[cp] = int16_t(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// Decode one UTF-8 character at s[i]; returns its code point (or 0xFFFFFFFF if invalid) and advances i.
uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len = b0 < 0x80 ? 1 : b0 >= 0xf0 ? 4 : b0 >= 0xe0 ? 3 : b0 >= 0xc0 ? 2 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return 0xffffffffu;
  }
  uint32_t cp = len == 1 ? b0 : b0 & (0x7fu >> len);
  for (size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3fu);
  i += len;
  return cp;
}

}  // namespace

void Gpt2BpeTokenizer::finish(const std::string& source) {
  TP_CHECK(bpe_.size() > 0, IoError, "{}: the vocabulary is empty", source);
  if (added_.empty()) {
    if (const auto eot = bpe_.find("<|endoftext|>")) added_.add("<|endoftext|>", *eot);
  }
  const ByteMap& bm = byte_map();
  for (int b = 0; b < 256; ++b) {
    const auto id = bpe_.find(bm.encode[size_t(b)]);
    TP_CHECK(id.has_value(), IoError,
             "{}: the vocabulary has no symbol for byte {} ('{}'); a byte-level BPE vocabulary needs all 256", source,
             b, bm.encode[size_t(b)]);
    byte_ids_[b] = *id;
  }
}

Gpt2BpeTokenizer Gpt2BpeTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  Gpt2BpeTokenizer t;
  const auto vocab = parse_tokenizer_json(vocab_json);
  TP_CHECK(vocab.is_object(), IoError, "{}: expected a JSON object {{\"token\": id, ...}}, got a {}", vocab_json,
           vocab.type_name());
  for (const auto& [token, id] : vocab.items()) {
    TP_CHECK(id.is_number_integer(), IoError, "{}: token '{}' has id {}, not an integer", vocab_json, token, id.dump());
    t.bpe_.add_token(vocab_json, token, id.get<int64_t>());
  }
  std::istringstream lines(read_tokenizer_file(merges_txt));
  std::string line;
  for (size_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    TP_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
             IoError, "{}: line {} '{}' is not a merge 'a b' (two symbols separated by one space)", merges_txt, line_no,
             line);
    t.bpe_.add_merge(merges_txt, line_no, line.substr(0, sp), line.substr(sp + 1));
  }
  t.finish(vocab_json);
  return t;
}

Gpt2BpeTokenizer Gpt2BpeTokenizer::from_tokenizer_json(const std::string& tokenizer_json) {
  const auto j = parse_tokenizer_json(tokenizer_json);
  return with_json_errors(tokenizer_json, [&] {
    TP_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), IoError,
             "{}: no 'model' object; expected a Hugging Face tokenizer.json", tokenizer_json);
    const auto& model = j["model"];
    const std::string type = model.value("type", std::string("BPE"));
    TP_CHECK(type == "BPE", ConfigError,
             "{}: model.type is '{}'; only BPE tokenizers are supported (provide vocab.json + merges.txt)",
             tokenizer_json, type);
    const auto pre = j.find("pre_tokenizer");
    const bool byte_level = pre != j.end() && pre->is_object() && pre->value("type", std::string()) == "ByteLevel" &&
                            pre->value("use_regex", true) && !pre->value("add_prefix_space", false);
    TP_CHECK(byte_level, ConfigError,
             "{}: pre_tokenizer is {}; only GPT-2's ByteLevel (use_regex true, add_prefix_space false) is supported",
             tokenizer_json, pre == j.end() ? std::string("missing") : pre->dump());
    Gpt2BpeTokenizer t;
    read_bpe_model(model, tokenizer_json, t.bpe_);
    read_added_tokens(j, tokenizer_json, [&](const std::string& content, int64_t id) {
      t.bpe_.add_token(tokenizer_json, content, id);
      t.added_.add(content, int32_t(id));
    });
    t.finish(tokenizer_json);
    return t;
  });
}

void Gpt2BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  bpe_.merge_piece(
      piece,
      [&](std::string_view p, std::vector<int32_t>& symbols) {
        for (const char c : p) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
      },
      out);
}

std::vector<int32_t> Gpt2BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3);
  added_.split(
      text,
      [&](std::string_view segment, bool) {
        for (const std::string_view piece : gpt2_pretokenize(segment)) encode_piece(piece, out);
      },
      [&](int32_t id) { out.push_back(id); });
  return out;
}

std::string Gpt2BpeTokenizer::decode(std::span<const int32_t> ids) const {
  const ByteMap& bm = byte_map();
  std::string out;
  for (const int32_t id : ids) {
    const std::string& token = bpe_.token(id);
    if (added_.contains_id(id)) {
      out += token;
      continue;
    }
    for (size_t i = 0; i < token.size();) {
      const size_t start = i;
      const uint32_t cp = next_code_point(token, i);
      if (cp < bm.decode.size() && bm.decode[cp] >= 0) out += char(bm.decode[cp]);
      else out.append(token, start, i - start);  // not a byte symbol: keep the text as is
    }
  }
  return out;
}

}  // namespace tensorpar::io
