// KvCache: the keys and values of the positions generated so far, per layer, for this rank's
// key/value heads only (1/t of them, or the one replicated head when t > kv_heads): per rank
// 2 * layers * B * max_seq * kv_heads_per_partition * head_dim floats, allocated once.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "tensorpar/core/tensor.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {

class KvCache {
 public:
  // For `model` (its TP degree decides the heads held here), `batch` rows of up to `max_seq` positions.
  KvCache(const TransformerLM& model, int64_t batch, int64_t max_seq);

  int64_t batch() const { return batch_; }
  int64_t max_seq() const { return max_seq_; }
  // Positions 0 .. length()-1 of every row are filled.
  int64_t length() const { return length_; }
  void advance(int64_t n_new);
  void clear() { length_ = 0; }
  // One slice per layer, for TransformerLM::forward_cached.
  std::span<const KvCacheSlice> layers() const { return slices_; }
  int64_t bytes() const { return k_.nbytes() + v_.nbytes(); }

 private:
  int64_t batch_ = 0, max_seq_ = 0, length_ = 0;
  Tensor k_, v_;  // (layers, batch, max_seq, kv_heads_per_partition * head_dim)
  std::vector<KvCacheSlice> slices_;
};

}  // namespace tensorpar
