#include "tensorpar/train/grad_buckets.hpp"

#include <algorithm>

#include "tensorpar/core/profile.hpp"

namespace tensorpar {

std::vector<int64_t> bucket_bounds(int64_t total, const std::vector<int64_t>& cuts, int64_t bucket_bytes) {
  const int64_t bucket_elements = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  std::vector<int64_t> bounds{0};
  for (int64_t cut : cuts) {
    TP_CHECK(cut >= bounds.back() && cut <= total, Error, "gradient bucket cut {} out of order", cut);
    if (cut - bounds.back() >= bucket_elements) bounds.push_back(cut);
  }
  if (bounds.back() < total) bounds.push_back(total);
  if (bounds.size() == 1) bounds.push_back(total);  // an empty arena: one empty bucket
  return bounds;
}

GradBuckets::GradBuckets(ProcessGroup& dp, std::span<float> arena, const std::vector<int64_t>& cuts,
                         int64_t bucket_bytes)
    : dp_(dp), arena_(arena), bounds_(bucket_bounds(int64_t(arena.size()), cuts, bucket_bytes)) {
  works_.resize(bucket_count());
}

void GradBuckets::finish_bucket(size_t i) {
  works_[i].wait();
  // divide (not multiply by 1/D): the same bits as the per-parameter path at any D
  for (float& g : arena_.subspan(size_t(bounds_[i]), size_t(bounds_[i + 1] - bounds_[i]))) g /= float(dp_.size());
}

void GradBuckets::ready(int64_t n) {
  if (dp_.size() == 1) return;
  while (started_ < bucket_count() && bounds_[started_ + 1] <= n) {
    // Open MPI holds a temporary of about the message per request until it completes: with every
    // bucket in flight the peak held another copy of the gradients (860 against 706 MB at DP=2,
    // docs/scaling.md). The oldest finishes before another starts beyond kMaxInFlight.
    if (started_ - finished_ >= kMaxInFlight) finish_bucket(finished_++);
    const int64_t begin = bounds_[started_], end = bounds_[started_ + 1];
    works_[started_] = dp_.all_reduce_async(arena_.subspan(size_t(begin), size_t(end - begin)));
    ++started_;
  }
}

void GradBuckets::finish() {
  if (dp_.size() == 1) return;
  ready(int64_t(arena_.size()));
  TP_PROFILE_SCOPE("dp gradient wait");
  while (finished_ < bucket_count()) finish_bucket(finished_++);
  started_ = finished_ = 0;
}

}  // namespace tensorpar
