// GPT-2 byte-level BPE (Gpt2BpeTokenizer): loading vocab.json/merges.txt or tokenizer.json, the
// bytes_to_unicode mapping, merging by rank, and decoding back to bytes.
#include <array>
#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/gpt2_pretokenizer.hpp"
#include "tensorpar/io/tokenizer.hpp"

namespace tensorpar::io {

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
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

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TP_CHECK(in, IoError, "{}: cannot open tokenizer file; check the model directory", path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

nlohmann::json parse_json_file(const std::string& path) {
  const std::string text = read_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON ({}); re-download the tokenizer file", path, e.what()));
  }
}

}  // namespace

// Ids may leave holes (decode refuses them), but not many: at most kIdSlack beyond the token count.
constexpr int64_t kIdSlack = 65536;

void Gpt2BpeTokenizer::add_token(const std::string& source, const std::string& token, int64_t id,
                                 int64_t id_limit) {
  TP_CHECK(id >= 0 && id < INT32_MAX && !token.empty(), IoError,
           "{}: token '{}' has id {}; ids must be in [0, 2^31-1) and tokens non-empty", source, token, id);
  TP_CHECK(id < id_limit, IoError,
           "{}: token '{}' has id {}, but the file has fewer tokens than that (ids may exceed the token count by at "
           "most {}); the file is corrupt",
           source, token, id, kIdSlack);
  const auto [it, inserted] = token_to_id_.emplace(token, int32_t(id));
  TP_CHECK(inserted || it->second == id, IoError, "{}: token '{}' has two ids, {} and {}", source, token, it->second, id);
  if (size_t(id) >= id_to_token_.size()) id_to_token_.resize(size_t(id) + 1);
  TP_CHECK(id_to_token_[size_t(id)].empty() || id_to_token_[size_t(id)] == token, IoError,
           "{}: id {} is used by both '{}' and '{}'", source, id, id_to_token_[size_t(id)], token);
  id_to_token_[size_t(id)] = token;
}

void Gpt2BpeTokenizer::add_merge(const std::string& source, size_t line, const std::string& a, const std::string& b) {
  TP_CHECK(!a.empty() && !b.empty() && a.find(' ') == std::string::npos && b.find(' ') == std::string::npos, IoError,
           "{}: merge {} ('{}' '{}') is not two non-empty symbols without spaces", source, line, a, b);
  // A repeated merge keeps its first (best) rank, as HF does when building the rank table.
  merge_rank_.emplace(a + ' ' + b, int32_t(merge_rank_.size()));
}

void Gpt2BpeTokenizer::finish(const std::string& source) {
  TP_CHECK(!token_to_id_.empty(), IoError, "{}: the vocabulary is empty", source);
  if (special_tokens_.empty() && token_to_id_.count("<|endoftext|>")) special_tokens_.push_back("<|endoftext|>");
  for (const auto& s : special_tokens_) special_ids_.insert(token_to_id_.at(s));
  // Longest first, so a special token that contains another wins at the same position.
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

Gpt2BpeTokenizer Gpt2BpeTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt) {
  Gpt2BpeTokenizer t;
  const auto vocab = parse_json_file(vocab_json);
  TP_CHECK(vocab.is_object(), IoError, "{}: expected a JSON object {{\"token\": id, ...}}, got a {}", vocab_json,
           vocab.type_name());
  for (const auto& [token, id] : vocab.items()) {
    TP_CHECK(id.is_number_integer(), IoError, "{}: token '{}' has id {}, not an integer", vocab_json, token, id.dump());
    t.add_token(vocab_json, token, id.get<int64_t>(), int64_t(vocab.size()) + kIdSlack);
  }
  std::istringstream lines(read_text(merges_txt));
  std::string line;
  for (size_t line_no = 1; std::getline(lines, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t sp = line.find(' ');
    TP_CHECK(sp != std::string::npos && line.find(' ', sp + 1) == std::string::npos, IoError,
             "{}: line {} '{}' is not a merge 'a b' (two symbols separated by one space)", merges_txt, line_no, line);
    t.add_merge(merges_txt, line_no, line.substr(0, sp), line.substr(sp + 1));
  }
  t.finish(vocab_json);
  return t;
}

Gpt2BpeTokenizer Gpt2BpeTokenizer::from_tokenizer_json(const std::string& tokenizer_json) {
  const auto j = parse_json_file(tokenizer_json);
  // A value of the wrong JSON type ({"model": {"type": 1}}, "use_regex": "yes") makes nlohmann's
  // value()/get() throw type_error; it is a malformed file like any other (found by fuzz/fuzz_tokenizer).
  try {
    return from_tokenizer_json(tokenizer_json, j);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: unexpected JSON structure ({}); re-download the tokenizer file", tokenizer_json,
                              e.what()));
  }
}

Gpt2BpeTokenizer Gpt2BpeTokenizer::from_tokenizer_json(const std::string& tokenizer_json, const nlohmann::json& j) {
  TP_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), IoError,
           "{}: no 'model' object; expected a Hugging Face tokenizer.json", tokenizer_json);
  const auto& model = j["model"];
  const std::string type = model.value("type", std::string("BPE"));
  TP_CHECK(type == "BPE", ConfigError,
           "{}: model.type is '{}'; only GPT-2 style byte-level BPE is supported (provide vocab.json + merges.txt)",
           tokenizer_json, type);
  const auto pre = j.find("pre_tokenizer");
  const bool byte_level = pre != j.end() && pre->is_object() && pre->value("type", std::string()) == "ByteLevel" &&
                          pre->value("use_regex", true) && !pre->value("add_prefix_space", false);
  TP_CHECK(byte_level, ConfigError,
           "{}: pre_tokenizer is {}; only GPT-2's ByteLevel (use_regex true, add_prefix_space false) is supported",
           tokenizer_json, pre == j.end() ? std::string("missing") : pre->dump());

  Gpt2BpeTokenizer t;
  TP_CHECK(model.contains("vocab") && model["vocab"].is_object(), IoError, "{}: model.vocab is not an object",
           tokenizer_json);
  const int64_t id_limit =
      int64_t(model["vocab"].size()) + (j.contains("added_tokens") ? int64_t(j["added_tokens"].size()) : 0) + kIdSlack;
  for (const auto& [token, id] : model["vocab"].items()) {
    TP_CHECK(id.is_number_integer(), IoError, "{}: model.vocab token '{}' has id {}, not an integer", tokenizer_json,
             token, id.dump());
    t.add_token(tokenizer_json, token, id.get<int64_t>(), id_limit);
  }
  TP_CHECK(model.contains("merges") && model["merges"].is_array(), IoError, "{}: model.merges is not an array",
           tokenizer_json);
  size_t k = 0;
  for (const auto& m : model["merges"]) {
    ++k;
    if (m.is_string()) {  // older format: "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      TP_CHECK(sp != std::string::npos, IoError, "{}: model.merges[{}] '{}' is not 'a b'", tokenizer_json, k - 1, s);
      t.add_merge(tokenizer_json, k, s.substr(0, sp), s.substr(sp + 1));
    } else {  // newer format: ["a", "b"]
      TP_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), IoError,
               "{}: model.merges[{}] is {}, neither 'a b' nor [\"a\", \"b\"]", tokenizer_json, k - 1, m.dump());
      t.add_merge(tokenizer_json, k, m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      TP_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                   a["content"].is_string(),
               IoError, "{}: added_tokens entry {} has no integer 'id' and string 'content'", tokenizer_json, a.dump());
      const std::string content = a["content"].get<std::string>();
      t.add_token(tokenizer_json, content, a["id"].get<int64_t>(), id_limit);
      t.special_tokens_.push_back(content);
    }
  }
  t.finish(tokenizer_json);
  return t;
}

std::optional<int32_t> Gpt2BpeTokenizer::token_to_id(std::string_view token) const {
  const auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string& Gpt2BpeTokenizer::id_to_token(int32_t id) const {
  TP_CHECK(id >= 0 && size_t(id) < id_to_token_.size() && !id_to_token_[size_t(id)].empty(), ConfigError,
           "GPT-2 tokenizer: token id {} is not in the vocabulary (size {}); the model and tokenizer do not match", id,
           id_to_token_.size());
  return id_to_token_[size_t(id)];
}

void Gpt2BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const ByteMap& bm = byte_map();
  std::vector<std::string> symbols;
  symbols.reserve(piece.size());
  for (const char c : piece) symbols.push_back(bm.encode[static_cast<unsigned char>(c)]);
  std::string key;
  while (symbols.size() > 1) {
    // The adjacent pair with the best (lowest) merge rank; merge every occurrence of it, left to right.
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(1, ' ').append(symbols[i + 1]);
      const auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT32_MAX) break;
    const std::string first = symbols[best], second = symbols[best + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == first && symbols[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(symbols[i]));
        i += 1;
      }
    }
    symbols = std::move(merged);
  }
  for (const auto& s : symbols) {
    const auto it = token_to_id_.find(s);
    TP_CHECK(it != token_to_id_.end(), ConfigError,
             "GPT-2 tokenizer: no vocabulary entry for symbol '{}' (from text '{}'); the vocab and merges files do not "
             "match or the vocab lacks the 256 byte symbols",
             s, piece);
    out.push_back(it->second);
  }
}

std::vector<int32_t> Gpt2BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  size_t pos = 0;
  while (pos < text.size()) {
    // Earliest special token from pos (longest first at equal positions).
    size_t found = std::string_view::npos;
    const std::string* which = nullptr;
    for (const auto& s : special_tokens_) {
      const size_t at = text.find(s, pos);
      if (at < found) {
        found = at;
        which = &s;
      }
    }
    const std::string_view segment = text.substr(pos, found == std::string_view::npos ? text.npos : found - pos);
    for (const std::string_view piece : gpt2_pretokenize(segment)) encode_piece(piece, out);
    if (!which) break;
    out.push_back(token_to_id_.at(*which));
    pos = found + which->size();
  }
  return out;
}

std::string Gpt2BpeTokenizer::decode(std::span<const int32_t> ids) const {
  const ByteMap& bm = byte_map();
  std::string out;
  for (const int32_t id : ids) {
    const std::string& token = id_to_token(id);
    if (special_ids_.count(id)) {
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
