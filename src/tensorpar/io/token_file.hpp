// Token files for training data. llm.c format: a header of 256 int32 (header[0] = 20240520 magic,
// header[1] = version (1: uint16 tokens, 2: uint32 tokens), header[2] = token count), then the tokens.
// Anything not starting with the magic is plain text, read as bytes = tokens (byte-level vocab 256),
// unless its first 1024 bytes contain a NUL byte (a binary file with a bad magic: IoError).
//
// A TokenDataset is one file, or the shards a glob names (`dir/train_*.bin`, as llm.c writes them,
// in sorted order), memory-mapped and read in place: nothing is copied at open, so memory does not
// grow with the data, and every rank's map shares the page cache. Tokens keep their file width
// (uint8/uint16/uint32) and are converted and checked against the vocabulary per read; the pages a
// read touched are released after it, so residency stays at about one batch.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tensorpar/io/atomic_file.hpp"

namespace tensorpar::io {

inline constexpr int32_t kLlmcTokenMagic = 20240520;
inline constexpr int kLlmcHeaderInts = 256;
// Ids are int32 in memory: a vocabulary of at most 2^31 ids (0 .. 2^31-1).
inline constexpr int64_t kMaxTokenVocab = int64_t(INT32_MAX) + 1;

class TokenDataset {
 public:
  // A path, or a glob pattern (*, ?, [...]) matching one or more files, concatenated in sorted order.
  // IoError: no file matches, a file is missing or empty, bad magic (binary, not text), bad version,
  // a count disagreeing with the file size (truncated or trailing bytes), text and llm.c shards mixed.
  // Only the headers (and the first 1 KiB of text files) are read.
  static TokenDataset open(const std::string& path_or_glob);

  int64_t size() const { return size_; }  // tokens in all shards
  bool byte_level() const { return byte_level_; }  // plain text: one token per byte
  const std::string& name() const { return name_; }  // the path or pattern given to open()
  std::vector<std::string> paths() const;

  // dst[i] = token (position + i), i < n, across shard boundaries. IoError naming the file and the
  // token's position in it if a token is >= vocab (ids beyond int32 included; vocab <= kMaxTokenVocab).
  void read(int64_t position, int64_t n, int32_t* dst, int64_t vocab) const;
  // The same checks without keeping the tokens.
  void check(int64_t position, int64_t n, int64_t vocab) const;

 private:
  struct Shard {
    std::string path;
    MappedFile map;
    uint64_t data_offset = 0;  // bytes before the first token
    int width = 1;             // bytes per token: 1 text, 2 llm.c v1, 4 llm.c v2
    int64_t first = 0, count = 0;  // global position of the first token, tokens in the shard
  };
  static Shard open_shard(const std::string& path);

  std::string name_;
  std::vector<Shard> shards_;
  int64_t size_ = 0;
  bool byte_level_ = false;
};

// Writes "<path>.tmp.<pid>" then renames. Version 1 requires 0 <= tokens < 65536, version 2 tokens >= 0.
void write_llmc_tokens(const std::string& path, std::span<const int32_t> tokens, int version);

}  // namespace tensorpar::io
