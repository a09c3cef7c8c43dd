#include "tensorpar/train/data_loader.hpp"

#include <algorithm>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

DataLoader::DataLoader(std::span<const int32_t> tokens, int64_t B, int64_t T, int dp_rank, int dp_size,
                       const std::string& what)
    : tokens_(tokens), B_(B), T_(T), dp_rank_(dp_rank), dp_size_(dp_size) {
  TP_CHECK(B >= 1 && T >= 1, ConfigError, "batch ({}) and sequence length ({}) must be positive", B, T);
  const int64_t needed = B * T * dp_size + 1;
  TP_CHECK(int64_t(tokens.size()) >= needed, ConfigError,
           "{} has {} tokens but a batch of {} x {} (x {} data-parallel ranks) needs {}; use a smaller --batch or "
           "--seq, or more data",
           what, tokens.size(), B, T, dp_size, needed);
  reset();
}

void DataLoader::reset() { position_ = B_ * T_ * dp_rank_; }

void DataLoader::seek(int64_t position) {
  TP_CHECK(position >= 0 && position + B_ * T_ + 1 <= int64_t(tokens_.size()), ConfigError,
           "the data position {} of the checkpoint is outside the {} training tokens of the data; resume with the "
           "data the checkpoint was trained on",
           position, tokens_.size());
  position_ = position;
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  const int64_t n = B_ * T_;
  std::copy_n(tokens_.data() + position_, n, inputs);
  std::copy_n(tokens_.data() + position_ + 1, n, targets);
  position_ += n * dp_size_;
  if (position_ + n * dp_size_ + 1 > int64_t(tokens_.size())) reset();
}

}  // namespace tensorpar
