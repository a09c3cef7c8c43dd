// The GPT-2 pre-tokenizer: splits text into the pieces BPE merges within, with the GPT-2 pattern itself
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// run by PCRE2 in UTF + UCP mode (Unicode properties for \p{..} and \s), JIT-compiled when the library
// supports it. PCRE2's UCP \s is Unicode White_Space, as in the Oniguruma engine Hugging Face's
// tokenizers use (so U+0085 is a space and U+FEFF is not; JavaScript's \s differs on both).
#pragma once
#include <string_view>
#include <vector>

namespace tensorpar::io {

// Pieces of `text` (views into it) in order; their concatenation is `text`. Bytes that are not valid
// UTF-8 (which Hugging Face cannot take at all) cannot match the pattern: each maximal run of them is
// a piece of its own, so any byte string round-trips. Thread-safe.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace tensorpar::io
