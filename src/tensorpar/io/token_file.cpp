// Memory-mapped llm.c token files and plain-text (byte-level) training data; writing llm.c files.
#include "tensorpar/io/token_file.hpp"

#include <glob.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/atomic_file.hpp"

namespace tensorpar::io {

namespace {

constexpr size_t kHeaderBytes = kLlmcHeaderInts * 4;

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// Drops this process's mapping of the pages under [p, p + n): they stay in the page cache (shared
// with the other ranks) but stop counting towards this process's resident memory.
void release_pages(const std::byte* p, size_t n) {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n + page - 1) / page * page;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice: failure is harmless
}

}  // namespace

TokenDataset::Shard TokenDataset::open_shard(const std::string& path) {
  Shard s;
  s.path = path;
  s.map = MappedFile::open(path);
  const uint64_t size = s.map.size();
  const std::byte* bytes = s.map.data();
  TP_CHECK(size > 0, IoError, "{}: file is empty; it needs at least one token", path);
  int32_t magic = 0;
  if (size >= 4) std::memcpy(&magic, bytes, 4);
  if (magic != kLlmcTokenMagic) {
    // Text has no NUL bytes; a binary header with the wrong magic (another llm.c file kind, a corrupt
    // token file) does, and reading it as bytes would silently train on garbage.
    const size_t probe = std::min<size_t>(size, kHeaderBytes);
    TP_CHECK(std::memchr(bytes, 0, probe) == nullptr, IoError,
             "{}: starts with magic {} instead of the llm.c token magic {} and is not plain text (it has NUL bytes); "
             "pass an llm.c token file (e.g. from llm.c's dev/data scripts) or a text file",
             path, magic, kLlmcTokenMagic);
    TP_CHECK(size <= uint64_t(INT64_MAX), IoError, "{}: file of {} bytes is too large", path, size);
    s.width = 1;  // plain text: one token per byte
    s.count = int64_t(size);
    return s;
  }
  TP_CHECK(size >= kHeaderBytes, IoError,
           "{}: llm.c token file is {} bytes, shorter than its {}-byte header; the file is truncated", path, size,
           kHeaderBytes);
  int32_t header[3];
  std::memcpy(header, bytes, sizeof(header));
  const int32_t version = header[1], count = header[2];
  TP_CHECK(version == 1 || version == 2, IoError,
           "{}: llm.c token file has header version {}; expected 1 (uint16 tokens) or 2 (uint32 tokens)", path,
           version);
  TP_CHECK(count > 0, IoError, "{}: llm.c token file header says it holds {} tokens; it needs at least one", path,
           count);
  s.width = version == 1 ? 2 : 4;
  const uint64_t expected = kHeaderBytes + uint64_t(count) * uint64_t(s.width);  // < 2^34: no overflow
  TP_CHECK(size == expected, IoError,
           "{}: llm.c header says {} tokens ({} bytes with the header) but the file is {} bytes; the file is "
           "truncated or corrupt",
           path, count, expected, size);
  s.data_offset = kHeaderBytes;
  s.count = count;
  return s;
}

TokenDataset TokenDataset::open(const std::string& path_or_glob) {
  TokenDataset d;
  d.name_ = path_or_glob;
  std::vector<std::string> paths;
  std::error_code ec;
  if (has_glob_chars(path_or_glob) && !std::filesystem::exists(path_or_glob, ec)) {  // a file named "a[1].txt" is itself
    glob_t g{};
    const int rc = ::glob(path_or_glob.c_str(), GLOB_ERR, nullptr, &g);  // sorted, as llm.c's shard names
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    TP_CHECK(rc == 0 && !paths.empty(), IoError,
             "{}: no file matches this pattern; check the --data path (quote it so the shell does not expand it)",
             path_or_glob);
  } else {
    paths.push_back(path_or_glob);
  }
  for (const std::string& path : paths) {
    Shard s = open_shard(path);
    const bool text = s.width == 1;
    if (d.shards_.empty()) d.byte_level_ = text;
    TP_CHECK(text == d.byte_level_, IoError,
             "{}: {} while {} is {}; the shards of one data set must all be llm.c token files or all text", path,
             text ? "is plain text" : "is an llm.c token file", d.shards_.front().path,
             d.byte_level_ ? "plain text" : "an llm.c token file");
    s.first = d.size_;
    TP_CHECK(!__builtin_add_overflow(d.size_, s.count, &d.size_), IoError, "{}: more than 2^63 tokens",
             path_or_glob);
    d.shards_.push_back(std::move(s));
  }
  return d;
}

std::vector<std::string> TokenDataset::paths() const {
  std::vector<std::string> out;
  for (const Shard& s : shards_) out.push_back(s.path);
  return out;
}

void TokenDataset::read(int64_t position, int64_t n, int32_t* dst, int64_t vocab) const {
  TP_CHECK(position >= 0 && n >= 0 && position <= size_ && n <= size_ - position, ShapeError,
           "{}: tokens [{}, {}+{}) are outside the data set of {} tokens", name_, position, position, n, size_);
  TP_CHECK(vocab >= 1 && vocab <= kMaxTokenVocab, ConfigError, "vocabulary size {} must be between 1 and 2^31", vocab);
  // the shard holding `position`: the last one whose first token is <= position
  auto it = std::upper_bound(shards_.begin(), shards_.end(), position,
                             [](int64_t p, const Shard& s) { return p < s.first; });
  --it;
  const uint64_t limit = uint64_t(vocab);
  while (n > 0) {
    const Shard& s = *it++;
    const int64_t offset = position - s.first, take = std::min(n, s.count - offset);
    const std::byte* src = s.map.data() + s.data_offset + uint64_t(offset) * uint64_t(s.width);
    for (int64_t i = 0; i < take; ++i) {
      uint64_t t;
      if (s.width == 1) {
        t = uint8_t(src[i]);
      } else if (s.width == 2) {
        uint16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        t = v;
      } else {
        uint32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        t = v;
      }
      TP_CHECK(t < limit, IoError,
               "{}: token {} at position {} of this file is outside the model's vocabulary of {}; the data and the "
               "model do not match (a fresh model takes --vocab)",
               s.path, t, offset + i, vocab);
      if (dst != nullptr) *dst++ = int32_t(t);
    }
    release_pages(src, size_t(take) * size_t(s.width));
    position += take;
    n -= take;
  }
}

void TokenDataset::check(int64_t position, int64_t n, int64_t vocab) const { read(position, n, nullptr, vocab); }

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
