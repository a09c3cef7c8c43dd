// Batches of next-token examples, llm.c's loader: batch row b of a step is
// tokens[p + b*T : p + b*T + T] with targets shifted by one; p advances by B*T*ranks and wraps.
// Every tensor-parallel rank reads the same batch; data-parallel ranks read disjoint rows.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tensorpar {

class DataLoader {
 public:
  // tokens must hold at least B*T*dp_size + 1 tokens (ConfigError naming `what` otherwise).
  DataLoader(std::span<const int32_t> tokens, int64_t B, int64_t T, int dp_rank, int dp_size,
             const std::string& what = "data");
  // inputs, targets (B, T)
  void next(int32_t* inputs, int32_t* targets);
  void reset();
  // Where the next batch starts (a token index): saved in checkpoints, restored by seek().
  int64_t position() const { return position_; }
  // ConfigError if a batch cannot be read at `position` (the data changed since the checkpoint).
  void seek(int64_t position);

 private:
  std::span<const int32_t> tokens_;
  int64_t B_, T_;
  int dp_rank_, dp_size_;
  int64_t position_ = 0;
};

}  // namespace tensorpar
