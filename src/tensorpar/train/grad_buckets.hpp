// GradBuckets: the data-parallel average of a model's gradient arena in buckets of about
// `bucket_bytes` (PyTorch DDP's 25 MB by default), each all-reduced as soon as backward has
// finalised all of its gradients, so the all-reduce of the last layers overlaps the backward of the
// first. Buckets are cut at parameter boundaries, in arena order (= the order backward finishes).
// Collective over the data-parallel group: every rank builds the same buckets from the same model.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

// Bucket bounds over an arena of `total` elements: [0, b1, ..., total], each bucket at least
// bucket_bytes (but the last) and ending only at one of `cuts` or at the end. Shared with the
// ZeRO-1 optimizer (train/zero_optimizer.hpp), which reduce-scatters the same buckets.
std::vector<int64_t> bucket_bounds(int64_t total, const std::vector<int64_t>& cuts, int64_t bucket_bytes);

class GradBuckets {
 public:
  // `cuts`: increasing arena offsets where a parameter's gradient starts (the first is 0); buckets
  // end only at a cut or at the arena's end.
  GradBuckets(ProcessGroup& dp, std::span<float> arena, const std::vector<int64_t>& cuts, int64_t bucket_bytes);

  // Backward says the first n elements of the arena are final: start every bucket inside them.
  void ready(int64_t n);
  // Start what is left, wait for every bucket and divide by the group size (the average).
  void finish();

  size_t bucket_count() const { return bounds_.size() - 1; }
  // Bucket i covers arena elements [bounds()[i], bounds()[i + 1]).
  const std::vector<int64_t>& bounds() const { return bounds_; }

 private:
  ProcessGroup& dp_;
  std::span<float> arena_;
  std::vector<int64_t> bounds_;
  static constexpr size_t kMaxInFlight = 2;  // as the ZeRO-1 optimizer (train/zero_optimizer.cpp)
  void finish_bucket(size_t i);  // wait for bucket i and average it
  std::vector<Work> works_;
  size_t started_ = 0, finished_ = 0;
};

}  // namespace tensorpar
