#include "tensorpar/parallel/parameter.hpp"

#include <algorithm>

#include "tensorpar/core/divide.hpp"
#include "tensorpar/core/rng.hpp"
#include "tensorpar/kernels/elementwise.hpp"

namespace tensorpar {

int64_t Parameter::global_index(int64_t local_flat) const {
  if (replicated()) return local_flat;
  const Shape& local = value.shape();
  // strides of the local and global tensors around the shard dimension
  int64_t inner = 1;
  for (size_t d = size_t(shard_dim) + 1; d < local.size(); ++d) inner *= local[d];
  const int64_t local_dim = local[size_t(shard_dim)], global_dim = global_shape[size_t(shard_dim)];
  const int64_t outer = local_flat / (local_dim * inner);
  const int64_t along = local_flat / inner % local_dim;
  const int64_t within = local_flat % inner;
  for (const ShardBlock& b : blocks) {
    if (along >= b.local_start && along < b.local_start + b.length)
      return (outer * global_dim + b.global_start + (along - b.local_start)) * inner + within;
  }
  throw Error(fmt::format("parameter {}: local index {} is outside every shard block", name, along));
}

Shape Parameter::local_shape() const {
  if (replicated()) return global_shape;
  Shape local = global_shape;
  int64_t length = 0;
  for (const ShardBlock& b : blocks) length += b.length;
  local[size_t(shard_dim)] = length;
  return local;
}

void allocate_storage(Parameter& p, ParameterAlloc alloc) {
  if (alloc == ParameterAlloc::Deferred) return;
  p.value = Tensor(p.local_shape());
  if (alloc == ParameterAlloc::Training) p.grad = Tensor(p.local_shape());
}

Parameter make_replicated(std::string name, Shape shape, int group_size, bool weight_decay, ParameterAlloc alloc) {
  Parameter p;
  p.name = std::move(name);
  p.global_shape = shape;
  p.replicas = group_size;
  p.weight_decay = weight_decay;
  allocate_storage(p, alloc);
  return p;
}

Parameter make_sharded(std::string name, Shape global_shape, int dim, const std::vector<int64_t>& segments,
                       int part, int parts, bool weight_decay, const std::vector<int>& segment_parts,
                       ParameterAlloc alloc) {
  Parameter p;
  p.name = std::move(name);
  TP_CHECK(segment_parts.empty() || segment_parts.size() == segments.size(), ConfigError,
           "{}: {} segment part counts for {} segments", p.name, segment_parts.size(), segments.size());
  int64_t total = 0, local_start = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const int pieces = segment_parts.empty() ? parts : segment_parts[s];
    const int replicas = int(divide(parts, pieces, fmt::format("{}: {} ranks over pieces of segment {}", p.name, parts, s)));
    const int64_t per_partition = divide(segments[s], pieces, fmt::format("{}: dimension {} of size", p.name, dim));
    p.blocks.push_back({local_start, total + (part / replicas) * per_partition, per_partition, replicas,
                        part % replicas == 0});
    local_start += per_partition;
    total += segments[s];
  }
  TP_CHECK_EQ(total, global_shape.at(size_t(dim)), fmt::format("segments of {}", p.name));
  p.global_shape = std::move(global_shape);
  p.shard_dim = dim;
  p.replicas = 1;
  p.weight_decay = weight_decay;
  allocate_storage(p, alloc);
  return p;
}

double Parameter::grad_sum_of_squares_once() const {
  const float* g = grad.f32();
  auto squares = [g](int64_t begin, int64_t end) { return sum_of_squares(g + begin, end - begin); };
  const bool uniform = std::all_of(blocks.begin(), blocks.end(), [](const ShardBlock& b) { return b.replicas == 1; });
  if (replicated() || uniform) return squares(0, grad.numel()) / replicas;
  // blocks with different replica counts: weight each run of the shard dimension by its own count
  const Shape& local = value.shape();
  int64_t inner = 1, outer = 1;
  for (size_t d = size_t(shard_dim) + 1; d < local.size(); ++d) inner *= local[d];
  for (size_t d = 0; d < size_t(shard_dim); ++d) outer *= local[d];
  const int64_t local_dim = local[size_t(shard_dim)];
  double total = 0;
  for (int64_t o = 0; o < outer; ++o)
    for (const ShardBlock& b : blocks) {
      const int64_t begin = (o * local_dim + b.local_start) * inner;
      total += squares(begin, begin + b.length * inner) / b.replicas;
    }
  return total;
}

void init_normal(Parameter& p, uint64_t seed, float std) {
  const PhiloxKey key = philox_key(seed, p.name);
  float* v = p.value.f32();
  for (int64_t i = 0; i < p.value.numel(); ++i) v[i] = std * philox_normal(key, uint64_t(p.global_index(i)));
}

void init_constant(Parameter& p, float value) { std::fill_n(p.value.f32(), p.value.numel(), value); }

}  // namespace tensorpar
