// The GPT-2 pre-tokenizer: splits text into the pieces BPE merges within, exactly as the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// does, written by hand over UTF-8 (no regex engine with Unicode classes is available in the standard library).
// ASCII is classified exactly; other code points by a table of the common non-letter blocks (spaces,
// digits, punctuation, symbols, combining marks, emoji), everything else counting as a letter.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace tensorpar::io {

enum class CharClass : uint8_t { Letter, Number, Space, Other };
CharClass classify_code_point(uint32_t cp);

// Pieces of `text` (views into it) in order; their concatenation is `text`. Invalid UTF-8 bytes are
// taken one at a time as "Other" characters, so any byte string round-trips.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace tensorpar::io
