// Batches of next-token examples, llm.c's loader over tokens [begin, end) of a memory-mapped data
// set: batch row b of a step is tokens[p + b*T : p + b*T + T] with targets shifted by one; p advances
// by B*T*ranks and wraps. Every tensor-parallel rank reads the same batch; data-parallel ranks read
// disjoint rows. Tokens are converted and checked against the vocabulary as they are read; each
// rank checks the whole step's window (every data-parallel rank's rows), so a bad token fails every
// rank at the same step with the same error instead of one rank alone.
#pragma once
#include <cstdint>
#include <string>

#include "tensorpar/io/token_file.hpp"

namespace tensorpar {

class DataLoader {
 public:
  // [begin, end) must hold at least B*T*dp_size + 1 tokens (ConfigError naming `what` otherwise, and
  // for sizes that overflow). `data` must outlive the loader.
  DataLoader(const io::TokenDataset& data, int64_t begin, int64_t end, int64_t B, int64_t T, int dp_rank,
             int dp_size, int64_t vocab, const std::string& what = "data");
  // inputs, targets (B, T). IoError naming the file and position for a token outside the vocabulary.
  void next(int32_t* inputs, int32_t* targets);
  void reset();
  // This rank's next row start, relative to begin: the step's start + B*T*dp_rank. Saved in
  // checkpoints, restored by seek().
  int64_t position() const { return position_; }
  // Continue from a position (resume, possibly at another batch or DP degree). ConfigError unless
  // the step's window from there fits in [begin, end) (the data changed since the checkpoint).
  void seek(int64_t position);

 private:
  const io::TokenDataset& data_;
  int64_t begin_, end_, B_, T_;
  int dp_rank_, dp_size_;
  int64_t vocab_;
  std::string what_;
  int64_t position_ = 0;
  std::vector<int32_t> row_;  // B*T + 1 tokens
};

}  // namespace tensorpar
