// SentencePiece-style BPE from a Hugging Face tokenizer.json (Llama family): which normalizer /
// pre-tokenizer / post-processor forms are understood, encoding with byte fallback, decoding.
#include <cstdio>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/io/tokenizer_json.hpp"

namespace tensorpar::io {

namespace {

constexpr std::string_view kSpace = "\xe2\x96\x81";  // "▁" (U+2581), SentencePiece's space

// Length of the UTF-8 character at s[i], or 1 for a byte that does not start a valid one.
size_t char_len(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const size_t len = b0 < 0x80 ? 1 : (b0 >= 0xc2 && b0 <= 0xdf) ? 2 : (b0 >= 0xe0 && b0 <= 0xef) ? 3
                   : (b0 >= 0xf0 && b0 <= 0xf4) ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0u) != 0x80u) return 1;
  return len;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  for (size_t i = 0; i < s.size();) {
    const size_t at = s.find(from, i);
    out.append(s.substr(i, at == s.npos ? s.npos : at - i));
    if (at == s.npos) break;
    out.append(to);
    i = at + from.size();
  }
  return out;
}

// The byte of a "<0xXX>" token, else -1.
int byte_of_token(const std::string& token) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  if (token.size() != 6 || token.rfind("<0x", 0) != 0 || token[5] != '>' || hex(token[3]) < 0 || hex(token[4]) < 0)
    return -1;
  return hex(token[3]) * 16 + hex(token[4]);
}

bool is_string_pattern(const nlohmann::json& n, std::string_view from, std::string_view to) {
  return n.contains("pattern") && n["pattern"].is_object() && n["pattern"].value("String", std::string()) == from &&
         n.value("content", std::string()) == to;
}

}  // namespace

SentencePieceBpeTokenizer SentencePieceBpeTokenizer::from_tokenizer_json(const std::string& path) {
  const auto j = parse_tokenizer_json(path);
  return with_json_errors(path, [&] {
    TP_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), IoError,
             "{}: no 'model' object; expected a Hugging Face tokenizer.json", path);
    const auto& model = j["model"];
    TP_CHECK(model.value("type", std::string("BPE")) == "BPE", ConfigError,
             "{}: model.type is '{}'; only BPE tokenizers are supported", path, model.value("type", std::string()));
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      TP_CHECK(!model.contains(key) || model[key].is_null() || model[key] == "", ConfigError,
               "{}: model.{} is set; only SentencePiece-style BPE without word prefixes/suffixes is supported", path, key);
    SentencePieceBpeTokenizer t;
    read_bpe_model(model, path, t.bpe_);
    read_added_tokens(j, path, [&](const std::string& content, int64_t id) {
      t.bpe_.add_token(path, content, id);
      t.added_.add(content, int32_t(id));
    });
    t.byte_fallback_ = model.value("byte_fallback", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      t.unk_ = t.bpe_.find(model["unk_token"].get<std::string>());
      TP_CHECK(t.unk_.has_value(), IoError, "{}: model.unk_token '{}' is not in the vocabulary", path,
               model["unk_token"].get<std::string>());
    }

    // Spaces to "▁" and the prefix "▁": the normalizer form (Llama 2's file) or the Metaspace form.
    bool replaces = false, prepends = false;
    const auto& norm = j.contains("normalizer") ? j["normalizer"] : nlohmann::json();
    std::vector<nlohmann::json> normalizers;
    if (norm.is_object() && norm.value("type", std::string()) == "Sequence" && norm.contains("normalizers"))
      for (const auto& n : norm["normalizers"]) normalizers.push_back(n);
    else if (!norm.is_null())
      normalizers.push_back(norm);
    for (const auto& n : normalizers) {
      const std::string type = n.is_object() ? n.value("type", std::string()) : std::string();
      if (type == "Prepend" && n.value("prepend", std::string()) == kSpace) prepends = true;
      else if (type == "Replace" && is_string_pattern(n, " ", kSpace)) replaces = true;
      else
        throw ConfigError(fmt::format("{}: normalizer {} is not supported (only Prepend \"▁\" and Replace \" \" -> \"▁\", "
                                      "as Llama's tokenizer.json has)",
                                      path, n.dump()));
    }
    t.replace_spaces_ = replaces;
    t.prepend_ = prepends;
    const auto& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json();
    if (!pre.is_null()) {
      TP_CHECK(pre.is_object() && pre.value("type", std::string()) == "Metaspace" &&
                   pre.value("replacement", std::string(kSpace)) == kSpace,
               ConfigError, "{}: pre_tokenizer {} is not supported (only none or Metaspace with \"▁\")", path, pre.dump());
      std::string scheme = pre.value("prepend_scheme", std::string());
      if (scheme.empty()) scheme = pre.value("add_prefix_space", true) ? "always" : "never";
      TP_CHECK(scheme == "always" || scheme == "first" || scheme == "never", ConfigError,
               "{}: Metaspace prepend_scheme '{}' is not one of always, first, never", path, scheme);
      t.replace_spaces_ = true;
      t.prepend_ = scheme != "never";
      t.prepend_always_ = false;  // Metaspace does not prepend to text that starts with a space
      t.prepend_each_segment_ = scheme == "always";
      t.split_words_ = pre.value("split", true);
    }

    const auto& post = j.contains("post_processor") ? j["post_processor"] : nlohmann::json();
    if (!post.is_null()) {
      TP_CHECK(post.is_object() && post.value("type", std::string()) == "TemplateProcessing" && post.contains("single") &&
                   post["single"].is_array(),
               ConfigError, "{}: post_processor {} is not supported (only TemplateProcessing)", path, post.dump());
      bool after = false;
      for (const auto& item : post["single"]) {
        if (item.contains("Sequence")) {
          after = true;
          continue;
        }
        TP_CHECK(item.contains("SpecialToken") && item["SpecialToken"].contains("id"), ConfigError,
                 "{}: post_processor item {} is neither a Sequence nor a SpecialToken", path, item.dump());
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        std::vector<int32_t> ids;
        if (post.contains("special_tokens") && post["special_tokens"].contains(name))
          for (const auto& id : post["special_tokens"][name].value("ids", nlohmann::json::array())) ids.push_back(id.get<int32_t>());
        else if (const auto id = t.bpe_.find(name))
          ids.push_back(*id);
        TP_CHECK(!ids.empty(), IoError, "{}: post_processor names special token '{}' that has no id", path, name);
        auto& dest = after ? t.suffix_ : t.prefix_;
        dest.insert(dest.end(), ids.begin(), ids.end());
      }
    }

    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      t.byte_ids_[b] = t.bpe_.find(name).value_or(-1);
    }
    // A '\n' never merges with its neighbours when neither it nor its byte token is part of any merge.
    const auto newline = t.bpe_.find("\n");
    const int32_t newline_id = newline ? *newline : t.byte_ids_[uint8_t('\n')];
    t.cut_before_space_ = true;
    for (int32_t id = 0; id < t.bpe_.size() && t.cut_before_space_; ++id) {
      if (!t.bpe_.has_id(id)) continue;
      const std::string& token = t.bpe_.token(id);
      for (size_t at = token.find(kSpace, 1); at != std::string::npos; at = token.find(kSpace, at + 1))
        if (at < kSpace.size() || token.compare(at - kSpace.size(), kSpace.size(), kSpace) != 0) t.cut_before_space_ = false;
    }
    t.newline_is_barrier_ = newline_id >= 0 && !t.bpe_.merges_with(newline_id) && !t.added_.any_contains('\n');
    return t;
  });
}

void SentencePieceBpeTokenizer::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  symbols.reserve(word.size());
  bool last_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t len = char_len(word, i);
    const std::string_view c = word.substr(i, len);
    i += len;
    if (const auto id = bpe_.find(c)) {
      symbols.push_back(*id);
      last_unk = false;
      continue;
    }
    bool bytes = byte_fallback_;
    for (const char b : c) bytes = bytes && byte_ids_[static_cast<unsigned char>(b)] >= 0;
    if (bytes) {
      for (const char b : c) symbols.push_back(byte_ids_[static_cast<unsigned char>(b)]);
      last_unk = false;
      continue;
    }
    TP_CHECK(unk_.has_value(), ConfigError,
             "tokenizer: character '{}' is not in the vocabulary, which has neither byte fallback nor an unk token", c);
    if (!last_unk) symbols.push_back(*unk_);  // consecutive unknowns become one <unk> (fuse_unk)
    last_unk = true;
  }
}

void SentencePieceBpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  auto init = [&](std::string_view piece, std::vector<int32_t>& symbols) { initial_symbols(piece, symbols); };
  if (!cut_before_space_) {
    std::vector<int32_t> symbols;
    initial_symbols(word, symbols);
    bpe_.merge(symbols);
    out.insert(out.end(), symbols.begin(), symbols.end());
    return;
  }
  // Cut before every "▁" run that follows another character.
  size_t begin = 0;
  for (size_t at = word.find(kSpace, 1); at != std::string_view::npos; at = word.find(kSpace, at + kSpace.size())) {
    if (at >= kSpace.size() && word.substr(at - kSpace.size(), kSpace.size()) == kSpace) continue;  // inside a run
    bpe_.merge_piece(word.substr(begin, at - begin), init, out);
    begin = at;
  }
  bpe_.merge_piece(word.substr(begin), init, out);
}


void SentencePieceBpeTokenizer::encode_text(std::string_view text, bool document_start, std::vector<int32_t>& out) const {
  added_.split(
      text,
      [&](std::string_view segment, bool first) {
        std::string s = replace_spaces_ ? replace_all(segment, " ", kSpace) : std::string(segment);
        const bool prepend = prepend_ && (first ? document_start : prepend_each_segment_);
        if (prepend && (prepend_always_ || s.rfind(kSpace, 0) != 0)) s.insert(0, kSpace);
        if (!split_words_) return encode_word(s, out);
        // Metaspace split: each "▁" starts a new word.
        size_t begin = 0;
        while (begin < s.size()) {
          size_t end = s.find(kSpace, begin + 1);
          if (end == std::string::npos) end = s.size();
          encode_word(std::string_view(s).substr(begin, end - begin), out);
          begin = end;
        }
      },
      [&](int32_t id) { out.push_back(id); });
}

std::vector<int32_t> SentencePieceBpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out(prefix_);
  encode_text(text, true, out);
  out.insert(out.end(), suffix_.begin(), suffix_.end());
  return out;
}

std::vector<int32_t> SentencePieceBpeTokenizer::encode_continuation(std::string_view text) const {
  std::vector<int32_t> out;
  encode_text(text, false, out);
  return out;
}

std::string SentencePieceBpeTokenizer::decode(std::span<const int32_t> ids) const {
  const bool document = !ids.empty() && !prefix_.empty() && ids[0] == prefix_[0];
  std::string out;
  for (size_t i = document ? 1 : 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const std::string& token = bpe_.token(id);
    if (added_.contains_id(id)) {
      out += token;
    } else if (const int b = byte_of_token(token); b >= 0 && byte_ids_[b] == id) {
      out += char(b);
    } else {
      out += replace_spaces_ ? replace_all(token, kSpace, " ") : token;
    }
  }
  if (document && prepend_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace tensorpar::io
