// Token files for training data. llm.c format: a header of 256 int32 (header[0] = 20240520 magic,
// header[1] = version (1: uint16 tokens, 2: uint32 tokens), header[2] = token count), then the tokens.
// Anything not starting with the magic is plain text, read as bytes = tokens (byte-level vocab 256),
// unless its first 1024 bytes contain a NUL byte (a binary file with a bad magic: IoError).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tensorpar::io {

inline constexpr int32_t kLlmcTokenMagic = 20240520;
inline constexpr int kLlmcHeaderInts = 256;

struct TokenData {
  std::vector<int32_t> tokens;
  bool byte_level = false;  // true for plain text
};

// IoError: missing file, bad magic (binary, not text), bad version, count disagreeing with the file size (truncated), empty.
TokenData load_tokens(const std::string& path);
// Writes "<path>.tmp.<pid>" then renames. Version 1 requires 0 <= tokens < 65536, version 2 tokens >= 0.
void write_llmc_tokens(const std::string& path, std::span<const int32_t> tokens, int version);

}  // namespace tensorpar::io
