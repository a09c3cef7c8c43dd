#include "tensorpar/train/data_loader.hpp"

#include <algorithm>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar {

DataLoader::DataLoader(const io::TokenDataset& data, int64_t begin, int64_t end, int64_t B, int64_t T, int dp_rank,
                       int dp_size, int64_t vocab, const std::string& what)
    : data_(data), begin_(begin), end_(end), B_(B), T_(T), dp_rank_(dp_rank), dp_size_(dp_size), vocab_(vocab),
      what_(what) {
  TP_CHECK(B >= 1 && T >= 1, ConfigError, "batch ({}) and sequence length ({}) must be positive", B, T);
  TP_CHECK(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size, ConfigError, "data-parallel rank {} of {}", dp_rank,
           dp_size);
  TP_CHECK(begin >= 0 && begin <= end && end <= data.size(), ConfigError,
           "{}: token range [{}, {}) is outside the data set of {} tokens", what, begin, end, data.size());
  const int64_t needed =
      checked_add(checked_product({B, T, dp_size}, "--batch x --seq x data-parallel ranks"), 1, "tokens per step");
  TP_CHECK(end - begin >= needed, ConfigError,
           "{} has {} tokens but a batch of {} x {} (x {} data-parallel ranks) needs {}; use a smaller --batch or "
           "--seq, or more data",
           what, end - begin, B, T, dp_size, needed);
  row_.resize(size_t(B * T + 1));
  reset();
}

void DataLoader::reset() { position_ = B_ * T_ * dp_rank_; }

void DataLoader::seek(int64_t position) {
  // A resume at another batch or data-parallel degree starts its step where the old one stopped, so
  // the step start need not be a multiple of this layout's B*T; it must lie inside the data.
  const int64_t n = B_ * T_;
  const int64_t window = position - n * dp_rank_;
  TP_CHECK(window >= 0 && window <= end_ - begin_ - (n * dp_size_ + 1), ConfigError,
           "{}: cannot continue from token {} of data-parallel rank {}: a step of {} x {} x {} ranks from there "
           "does not fit in the {} tokens of the data; resume with the data the checkpoint was trained on",
           what_, position, dp_rank_, B_, T_, dp_size_, end_ - begin_);
  position_ = position;
}

void DataLoader::next(int32_t* inputs, int32_t* targets) {
  const int64_t n = B_ * T_;
  const int64_t window = begin_ + position_ - n * dp_rank_;  // first token of the step (rank 0's row)
  // the other ranks' rows are checked, not kept: the same error on every rank at the same step
  if (dp_rank_ > 0) data_.check(window, n * dp_rank_, vocab_);
  data_.read(begin_ + position_, n + 1, row_.data(), vocab_);
  const int64_t after = begin_ + position_ + n + 1, window_end = window + n * dp_size_ + 1;
  if (after < window_end) data_.check(after, window_end - after, vocab_);
  std::copy_n(row_.begin(), n, inputs);
  std::copy_n(row_.begin() + 1, n, targets);
  position_ += n * dp_size_;
  // wrap when the next step's window (all ranks' rows) does not fit: every rank wraps at the same step
  if (position_ - n * dp_rank_ + n * dp_size_ + 1 > end_ - begin_) reset();
}

}  // namespace tensorpar
