#include "tensorpar/train/zero_optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/adamw.hpp"
#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/train/grad_buckets.hpp"

namespace tensorpar {

namespace {

// [begin, end) of a parameter's local flat elements held by `replicas` ranks of the TP group: the
// runs Parameter::grad_sum_of_squares_once weights.
struct ReplicaRun {
  int64_t begin, end;
  int replicas;
};

std::vector<ReplicaRun> replica_runs(const Parameter& p) {
  const int64_t n = p.value.numel();
  const bool uniform = std::all_of(p.blocks.begin(), p.blocks.end(), [](const ShardBlock& b) { return b.replicas == 1; });
  if (p.replicated() || uniform) return {{0, n, p.replicas}};
  const Shape& local = p.value.shape();
  int64_t inner = 1, outer = 1;
  for (size_t d = size_t(p.shard_dim) + 1; d < local.size(); ++d) inner *= local[d];
  for (size_t d = 0; d < size_t(p.shard_dim); ++d) outer *= local[d];
  const int64_t local_dim = local[size_t(p.shard_dim)];
  std::vector<ReplicaRun> runs;
  for (int64_t o = 0; o < outer; ++o)
    for (const ShardBlock& b : p.blocks) {
      const int64_t begin = (o * local_dim + b.local_start) * inner;
      runs.push_back({begin, begin + b.length * inner, b.replicas});
    }
  return runs;
}

}  // namespace

std::vector<io::ParameterTensors> ArenaMoments::tensors(const TransformerLM& model) {
  // pointers, not references, in the closures: they outlive this call (not the model or this struct)
  const TransformerLM* m = &model;
  auto at = [m](Tensor* t) {
    return [m, t](size_t i) { return t->f32() + m->grad_offset(*m->parameters().at(i)); };
  };
  return {{".exp_avg", at(&exp_avg)}, {".exp_avg_sq", at(&exp_avg_sq)}};
}

ZeroOptimizer::ZeroOptimizer(ProcessGroup& dp, ProcessGroup& tp, TransformerLM& model, const AdamWConfig& config,
                             int64_t bucket_bytes)
    : dp_(dp), tp_(tp), model_(model), config_(config), arena_(model.grad_arena()) {
  const int64_t total = int64_t(arena_.size());
  const int D = dp.size(), r = dp.rank();
  std::vector<int64_t> cuts;
  for (const Parameter* p : model.grad_order()) cuts.push_back(model.grad_offset(*p));
  const std::vector<int64_t> bounds =
      bucket_bounds(total, cuts, bucket_bytes > 0 ? bucket_bytes : std::numeric_limits<int64_t>::max());
  buckets_.resize(bounds.size() - 1);
  int64_t shard = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    b.begin = bounds[i];
    b.end = bounds[i + 1];
    const int64_t length = b.end - b.begin;
    auto piece_start = [&](int rank) { return b.begin + length * rank / D; };
    for (int q = 0; q < D; ++q) {
      const int64_t count = piece_start(q + 1) - piece_start(q);
      TP_CHECK(count <= int64_t(std::numeric_limits<int>::max()), ConfigError,
               "a ZeRO-1 shard of {} elements exceeds MPI's int count limit; lower --dp-bucket-mb", count);
      b.counts.push_back(int(count));
    }
    b.piece_begin = piece_start(r);
    b.piece_length = b.counts[size_t(r)];
    b.shard_offset = shard;
    shard += b.piece_length;
  }
  // parameters into their buckets; this rank's part of each as segments, and its norm runs
  for (Parameter* p : model.grad_order()) {
    const int64_t offset = model.grad_offset(*p), n = p->value.numel();
    auto it = std::upper_bound(bounds.begin(), bounds.end(), offset);
    Bucket& b = buckets_.at(size_t(it - bounds.begin()) - 1);
    TP_CHECK(offset + n <= b.end, Error, "parameter {} crosses a gradient bucket end", p->name);
    b.parameters.push_back(p);
    const int64_t begin = std::max(offset, b.piece_begin), end = std::min(offset + n, b.piece_begin + b.piece_length);
    if (begin >= end) continue;
    b.segments.push_back({p, begin - offset, begin, b.shard_offset + (begin - b.piece_begin), end - begin});
    for (const ReplicaRun& run : replica_runs(*p)) {
      const int64_t rb = std::max(begin, offset + run.begin), re = std::min(end, offset + run.end);
      if (rb < re) norm_runs_.push_back({rb, re - rb, run.replicas});
    }
  }
  m_ = Tensor({shard});
  v_ = Tensor({shard});
}

void ZeroOptimizer::ready(int64_t n) {
  if (dp_.async_mode() != AsyncMode::Nonblocking) return;  // deferred: blocking reduce-scatters at the end
  while (started_ < buckets_.size() && buckets_[started_].end <= n) {
    // Open MPI's non-blocking collectives hold a temporary of about their message until they
    // complete: finish the oldest before starting another beyond kMaxInFlight (docs/scaling.md)
    if (started_ - finished_ >= kMaxInFlight) finish_reduce_scatter(buckets_[finished_++]);
    Bucket& b = buckets_[started_];
    b.work = dp_.reduce_scatter_in_place_async(arena_.subspan(size_t(b.begin), size_t(b.end - b.begin)), b.counts);
    ++started_;
  }
}

void ZeroOptimizer::finish_reduce_scatter(Bucket& b) {
  if (dp_.async_mode() == AsyncMode::Nonblocking)
    b.work.wait();
  else
    dp_.reduce_scatter_in_place(arena_.subspan(size_t(b.begin), size_t(b.end - b.begin)), b.counts);
  // MPI leaves the summed piece at the bucket's start: move it to its own offset, then average
  float* piece = arena_.data() + b.piece_begin;
  if (b.piece_begin != b.begin) std::memmove(piece, arena_.data() + b.begin, size_t(b.piece_length) * sizeof(float));
  const float d = float(dp_.size());
  // divide (not multiply by 1/D): the same bits as the all-reduce paths
  for (int64_t i = 0; i < b.piece_length; ++i) piece[i] /= d;
}

void ZeroOptimizer::finish_gradients() {
  ready(int64_t(arena_.size()));
  TP_PROFILE_SCOPE("dp gradient wait");
  while (finished_ < buckets_.size()) finish_reduce_scatter(buckets_[finished_++]);
  started_ = finished_ = 0;
}

double ZeroOptimizer::clip_grad_norm(double max_norm) {
  double squares = 0;
  for (const NormRun& run : norm_runs_) squares += sum_of_squares(arena_.data() + run.arena_offset, run.length) / run.replicas;
  dp_.all_reduce(std::span<double>(&squares, 1));  // this TP rank's whole gradient
  tp_.all_reduce(std::span<double>(&squares, 1));  // the model's
  const double norm = std::sqrt(squares);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (const Bucket& b : buckets_)
        for (const Segment& s : b.segments) scale_inplace(arena_.data() + s.arena_offset, float(coef), s.length);
  }
  return norm;
}

void ZeroOptimizer::step(float lr) {
  ++step_;
  const bool nonblocking = dp_.async_mode() == AsyncMode::Nonblocking;
  // the weights of bucket i reach the parameters once its all-gather is done
  auto finish_gather = [this](Bucket& b) {
    b.work.wait();
    for (Parameter* p : b.parameters)
      std::memcpy(p->value.f32(), arena_.data() + model_.grad_offset(*p), p->value.nbytes());
  };
  size_t gathered = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    if (nonblocking && i - gathered >= kMaxInFlight) finish_gather(buckets_[gathered++]);
    for (const Segment& s : b.segments) {
      const AdamWParams params{lr, config_.beta1, config_.beta2, config_.eps,
                               s.parameter->weight_decay ? config_.weight_decay : 0.0f, step_};
      float* weights = s.parameter->value.f32() + s.param_offset;
      adamw_update(weights, arena_.data() + s.arena_offset, m_.f32() + s.shard_offset, v_.f32() + s.shard_offset,
                   s.length, params);
      // the gradient is spent: its place carries the new weights to the other replicas
      std::memcpy(arena_.data() + s.arena_offset, weights, size_t(s.length) * sizeof(float));
    }
    const std::span<float> bucket = arena_.subspan(size_t(b.begin), size_t(b.end - b.begin));
    if (nonblocking)  // the next bucket's update overlaps this one's all-gather
      b.work = dp_.all_gather_in_place_async(bucket, b.counts);
    else
      dp_.all_gather_in_place(bucket, b.counts);
  }
  TP_PROFILE_SCOPE("dp weight gather wait");
  while (gathered < buckets_.size()) finish_gather(buckets_[gathered++]);
}

std::span<float> ZeroOptimizer::first_local_gradient() {
  for (const Bucket& b : buckets_)
    if (!b.segments.empty()) return arena_.subspan(size_t(b.segments.front().arena_offset), 1);
  return {};
}

ArenaMoments ZeroOptimizer::empty_moments() const {
  const int64_t total = int64_t(arena_.size());
  return {Tensor({total}), Tensor({total})};
}

ArenaMoments ZeroOptimizer::gather_moments() {
  ArenaMoments whole = empty_moments();
  for (auto [shard, full] : {std::pair{&m_, &whole.exp_avg}, std::pair{&v_, &whole.exp_avg_sq}})
    for (const Bucket& b : buckets_) {
      std::memcpy(full->f32() + b.piece_begin, shard->f32() + b.shard_offset, size_t(b.piece_length) * sizeof(float));
      dp_.all_gather_in_place(full->span().subspan(size_t(b.begin), size_t(b.end - b.begin)), b.counts);
    }
  return whole;
}

void ZeroOptimizer::load_moments(const ArenaMoments& moments) {
  for (const Bucket& b : buckets_) {
    std::memcpy(m_.f32() + b.shard_offset, moments.exp_avg.f32() + b.piece_begin, size_t(b.piece_length) * sizeof(float));
    std::memcpy(v_.f32() + b.shard_offset, moments.exp_avg_sq.f32() + b.piece_begin,
                size_t(b.piece_length) * sizeof(float));
  }
}

}  // namespace tensorpar
