// Loading and writing llm.c token files and plain-text (byte-level) training data.
#include "tensorpar/io/token_file.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/atomic_file.hpp"

namespace tensorpar::io {

TokenData load_tokens(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TP_CHECK(in, IoError, "{}: cannot open token file; check the --data path", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TP_CHECK(!in.bad(), IoError, "{}: read error", path);
  TP_CHECK(!bytes.empty(), IoError, "{}: file is empty; it needs at least one token", path);

  TokenData out;
  int32_t magic = 0;
  if (bytes.size() >= 4) std::memcpy(&magic, bytes.data(), 4);
  if (magic != kLlmcTokenMagic) {
    // Text has no NUL bytes; a binary header with the wrong magic (another llm.c file kind, a corrupt
    // token file) does, and reading it as bytes would silently train on garbage.
    const size_t probe = std::min<size_t>(bytes.size(), kLlmcHeaderInts * 4);
    TP_CHECK(std::memchr(bytes.data(), 0, probe) == nullptr, IoError,
             "{}: starts with magic {} instead of the llm.c token magic {} and is not plain text (it has NUL bytes); "
             "pass an llm.c token file (e.g. from llm.c's dev/data scripts) or a text file",
             path, magic, kLlmcTokenMagic);
    out.byte_level = true;  // plain text: one token per byte
    out.byte_level = true;
    out.tokens.assign(reinterpret_cast<const unsigned char*>(bytes.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()) + bytes.size());
    return out;
  }
  constexpr size_t kHeaderBytes = kLlmcHeaderInts * 4;
  TP_CHECK(bytes.size() >= kHeaderBytes, IoError,
           "{}: llm.c token file is {} bytes, shorter than its {}-byte header; the file is truncated", path,
           bytes.size(), kHeaderBytes);
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof(header));
  const int32_t version = header[1], count = header[2];
  TP_CHECK(version == 1 || version == 2, IoError,
           "{}: llm.c token file has header version {}; expected 1 (uint16 tokens) or 2 (uint32 tokens)", path,
           version);
  const size_t token_bytes = version == 1 ? 2 : 4;
  TP_CHECK(count > 0, IoError, "{}: llm.c token file header says it holds {} tokens; it needs at least one", path,
           count);
  const size_t expected = kHeaderBytes + size_t(count) * token_bytes;
  TP_CHECK(bytes.size() == expected, IoError,
           "{}: llm.c header says {} tokens ({} bytes with the header) but the file is {} bytes; the file is "
           "truncated or corrupt",
           path, count, expected, bytes.size());
  out.tokens.resize(size_t(count));
  const char* p = bytes.data() + kHeaderBytes;
  for (size_t i = 0; i < size_t(count); ++i) {
    if (version == 1) {
      uint16_t t;
      std::memcpy(&t, p + 2 * i, 2);
      out.tokens[i] = t;
    } else {
      uint32_t t;
      std::memcpy(&t, p + 4 * i, 4);
      TP_CHECK(t <= uint32_t(INT32_MAX), IoError, "{}: token {} at position {} does not fit in int32", path, t, i);
      out.tokens[i] = int32_t(t);
    }
  }
  return out;
}

void write_llmc_tokens(const std::string& path, std::span<const int32_t> tokens, int version) {
  TP_CHECK(version == 1 || version == 2, ConfigError,
           "{}: llm.c token file version {} is not supported; use 1 (uint16) or 2 (uint32)", path, version);
  TP_CHECK(!tokens.empty() && tokens.size() <= size_t(INT32_MAX), ConfigError,
           "{}: cannot write {} tokens; an llm.c file holds 1 to 2^31-1 tokens", path, tokens.size());
  const int64_t limit = version == 1 ? 65536 : int64_t(INT32_MAX) + 1;
  for (size_t i = 0; i < tokens.size(); ++i)
    TP_CHECK(tokens[i] >= 0 && tokens[i] < limit, ConfigError,
             "{}: token {} at position {} does not fit in version {} (range [0, {})); use version 2 for large vocabs",
             path, tokens[i], i, version, limit);
  std::vector<int32_t> header(kLlmcHeaderInts, 0);
  header[0] = kLlmcTokenMagic;
  header[1] = version;
  header[2] = int32_t(tokens.size());
  std::vector<std::byte> body(tokens.size() * (version == 1 ? 2 : 4));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (version == 1) {
      const uint16_t t = uint16_t(tokens[i]);
      std::memcpy(body.data() + 2 * i, &t, 2);
    } else {
      const uint32_t t = uint32_t(tokens[i]);
      std::memcpy(body.data() + 4 * i, &t, 4);
    }
  }
  AtomicFile file(path);
  file.write(std::as_bytes(std::span(header)));
  file.write(body);
  file.commit();
}

}  // namespace tensorpar::io
