// ParallelAttention: causal self-attention with the heads split across the group. The fused QKV
// projection is column-parallel with segments [q | k | v], so each rank's slice holds exactly its own
// heads of Q, K and V; attention runs locally per head; the output projection is row-parallel. One
// all-reduce forward (output projection) and one backward (QKV input gradient). Grouped-query
// attention splits the KV heads the same way; with fewer KV heads than ranks, each KV head is
// replicated on the tp / n_kv ranks whose query heads use it, and the gradients of its weights are
// summed over those ranks (a sub-group of tp) at the end of backward. Optional RoPE (Llama) on q and k.
//
// Inference: forward_cached appends the new positions' k and v to this rank's KV cache (only its
// own KV heads) and attends over the cache; same single all-reduce as forward.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/kernels/rope.hpp"
#include "tensorpar/parallel/column_parallel_linear.hpp"
#include "tensorpar/parallel/row_parallel_linear.hpp"

namespace tensorpar {

struct AttentionOptions {
  std::string qkv_name;   // "h.0.attn.c_attn"
  std::string proj_name;  // "h.0.attn.c_proj"
  int64_t hidden = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // 0: same as n_heads
  int64_t head_dim = 0;    // 0: hidden / n_heads
  bool bias = true;
  bool rope = false;
  double rope_theta = 10000.0;
  int64_t max_positions = 0;  // RoPE table size
  uint64_t seed = 0;
  float init_std = 0.02f;
  float proj_init_std = 0.02f;
  Precision precision = Precision::F32;  // of the projections and of the attention core's block GEMMs
  SequenceParallelWorkspace* workspace = nullptr;  // sequence parallel: inp/out/dinp/dout are N/t tokens
  bool sequence_parallel = false;
  // Selective activation recomputation: backward recomputes the attention output (the output
  // projection's input) from the kept q, k, v and log-sum-exp with one more attention_forward, so
  // layers built with share_with keep it in one buffer between them.
  bool recompute_output = false;
  // Of the projections' weights (ColumnParallelOptions::alloc). Anything but Training is inference:
  // no gradient scratch either.
  ParameterAlloc alloc = ParameterAlloc::Training;
};

// One layer of a rank's KV cache (owned by infer::KvCache): k and v of this rank's KV heads,
// (B, max_seq, kv_heads_per_partition * head_dim) each.
struct KvCacheSlice {
  float* k = nullptr;
  float* v = nullptr;
  int64_t max_seq = 0;
};

// Where each batch row of a cached forward lives in the KV cache (continuous batching: rows are
// requests of different lengths): row b reads and extends cache row slot[b] from position past[b].
// Both (B). Rows must use distinct slots.
struct CacheRows {
  const int64_t* slot = nullptr;
  const int64_t* past = nullptr;
};

class ParallelAttention {
 public:
  // share_with: keep activations in the buffers of that layer (built alike) instead of allocating
  // them. With options.recompute_output, only the output (and scratch) is shared; otherwise all of
  // them, for full recomputation, where each block runs forward again right before its backward.
  ParallelAttention(ProcessGroup& tp, const AttentionOptions& options, int64_t batch, int64_t seq,
                    const ParallelAttention* share_with = nullptr);

  // out (B*T, hidden) whole; inp (B*T, hidden)
  void forward(float* out, const float* inp, int64_t B, int64_t T);
  // dinp (B*T, hidden) written, whole; parameter gradients accumulate.
  void backward(float* dinp, const float* dout, const float* inp, int64_t B, int64_t T);

  // Inference over n_new new positions per batch element at positions past_len .. past_len+n_new-1:
  // out (B*n_new, hidden) whole; inp (B*n_new, hidden). Writes their k, v into `cache` (which holds
  // positions 0..past_len-1 already) and attends over positions 0..p for the query at p.
  void forward_cached(float* out, const float* inp, int64_t B, int64_t n_new, int64_t past_len,
                      const KvCacheSlice& cache);
  // The same with every row at its own cache row and position (CacheRows).
  void forward_cached(float* out, const float* inp, int64_t B, int64_t n_new, const CacheRows& rows,
                      const KvCacheSlice& cache);

  void collect_parameters(std::vector<Parameter*>& out);
  // Use `first`'s gradient scratch (datt, dqkv) instead of this layer's own: it lives only inside
  // one backward call, so all the layers of a model can share it. `first` is built alike.
  void share_gradient_scratch(const ParallelAttention& first);

  int64_t heads_per_partition() const { return heads_pp_; }
  int64_t kv_heads_per_partition() const { return kv_heads_pp_; }
  int64_t head_dim() const { return head_dim_; }
  const RopeTable* rope_table() const { return rope_.get(); }
  // Bytes kept from forward to backward that this layer owns (q/k/v, output, lse, bf16 copies).
  int64_t activation_bytes() const;

  ColumnParallelLinear qkv;
  RowParallelLinear proj;

 private:
  static AttentionOptions resolved(const ProcessGroup& tp, AttentionOptions o);
  void sum_replicated_kv_grads_begin();
  void sum_replicated_kv_grads_end();
  void recompute_attention_output(int64_t B, int64_t T);  // att_ (and proj's bf16 copy) again
  AttentionOptions options_;
  int64_t heads_pp_ = 0, kv_heads_pp_ = 0, head_dim_ = 0, max_tokens_ = 0;
  std::unique_ptr<RopeTable> rope_;
  Tensor qkv_out_;  // (B*T, (H_pp + 2 KV_pp) * hd): q, k (after RoPE), v
  Tensor att_;      // (B*T, H_pp * hd): attention output = projection input
  Tensor lse_;      // (B, H_pp, T)
  Tensor datt_;     // (B*T, H_pp * hd)
  Tensor dqkv_;     // like qkv_out_
  // GQA with n_kv < tp: the ranks holding this rank's KV head (tp / n_kv consecutive ranks), and the
  // gradients of the k/v rows accumulated before this backward ((2 hd, in) weight then (2 hd) bias).
  std::unique_ptr<ProcessGroup> kv_group_;
  Tensor kv_grad_before_;
};

}  // namespace tensorpar
