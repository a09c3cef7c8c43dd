// The GPT-2 pre-tokenizer on PCRE2 (see the header).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tensorpar/io/gpt2_pretokenizer.hpp"

#include <pcre2.h>

#include <memory>
#include <string>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

namespace {

constexpr std::string_view kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

// The compiled pattern, shared by all threads (PCRE2 code, JIT included, is read-only while matching).
struct Pattern {
  std::unique_ptr<pcre2_code, CodeDeleter> code;
  bool jit = false;
  Pattern() {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // MATCH_INVALID_UTF: invalid UTF-8 is never part of a match instead of failing the whole call.
    code.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern.data()), kPattern.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr));
    if (!code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      throw Error(fmt::format("PCRE2 cannot compile the GPT-2 pattern at offset {}: {}; is libpcre2-8 built with "
                              "Unicode support?",
                              offset, reinterpret_cast<const char*>(message)));
    }
    jit = pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE) == 0;
  }
};

const Pattern& pattern() {
  static const Pattern p;
  return p;
}

}  // namespace

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  const Pattern& p = pattern();
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(p.code.get(), nullptr));
  std::vector<std::string_view> pieces;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = p.jit ? pcre2_jit_match(p.code.get(), subject, text.size(), pos, 0, match.get(), nullptr)
                         : pcre2_match(p.code.get(), subject, text.size(), pos, 0, match.get(), nullptr);
    size_t begin = text.size(), end = text.size();
    if (rc >= 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
      begin = ov[0];
      end = ov[1];
    } else if (rc != PCRE2_ERROR_NOMATCH) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw Error(fmt::format("PCRE2 failed on the GPT-2 pattern at byte {}: {}", pos,
                              reinterpret_cast<const char*>(message)));
    }
    // Every valid character matches one of the alternatives, so a gap is invalid UTF-8.
    if (begin > pos) pieces.push_back(text.substr(pos, begin - pos));
    if (end > begin) pieces.push_back(text.substr(begin, end - begin));
    pos = end > begin ? end : begin;
  }
  return pieces;
}

}  // namespace tensorpar::io
