#include "tensorpar/parallel/parallel_attention.hpp"

#include <algorithm>

#include "tensorpar/core/divide.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/attention.hpp"

namespace tensorpar {
namespace {

// The training attention core in the precision of the layer's GEMMs.
void core_forward(Precision p, float* out, float* lse, const float* qkv, const AttentionDims& d) {
  if (p == Precision::BF16) return attention_forward_bf16(out, lse, qkv, d);
  attention_forward(out, lse, qkv, d);
}

void core_backward(Precision p, float* dqkv, const float* dout, const float* out, const float* lse, const float* qkv,
                   const AttentionDims& d) {
  if (p == Precision::BF16) return attention_backward_bf16(dqkv, dout, out, lse, qkv, d);
  attention_backward(dqkv, dout, out, lse, qkv, d);
}

}  // namespace

AttentionOptions ParallelAttention::resolved(const ProcessGroup& tp, AttentionOptions o) {
  TP_CHECK(o.n_heads > 0 && o.hidden > 0, ConfigError, "attention needs positive hidden size and head count");
  if (o.n_kv_heads == 0) o.n_kv_heads = o.n_heads;
  if (o.head_dim == 0) {
    TP_CHECK(o.hidden % o.n_heads == 0, ConfigError,
             "hidden size {} is not divisible by the {} attention heads; choose a hidden size that is a multiple of "
             "the head count",
             o.hidden, o.n_heads);
    o.head_dim = o.hidden / o.n_heads;
  }
  TP_CHECK(o.n_heads % o.n_kv_heads == 0, ConfigError,
           "{} attention heads are not a multiple of the {} key/value heads", o.n_heads, o.n_kv_heads);
  TP_CHECK(o.n_heads % tp.size() == 0, ConfigError,
           "{} attention heads cannot be split over {} tensor-parallel ranks; use a TP degree that divides {}",
           o.n_heads, tp.size(), o.n_heads);
  TP_CHECK(o.n_kv_heads % tp.size() == 0 || tp.size() % o.n_kv_heads == 0, ConfigError,
           "{} key/value heads cannot be split over {} tensor-parallel ranks, nor replicated on them; use a TP "
           "degree that divides or is a multiple of {}",
           o.n_kv_heads, tp.size(), o.n_kv_heads);
  return o;
}

namespace {

ColumnParallelOptions qkv_options(const AttentionOptions& o, int tp_size) {
  ColumnParallelOptions c;
  c.name = o.qkv_name;
  c.in_features = o.hidden;
  const int64_t q = o.n_heads * o.head_dim, kv = o.n_kv_heads * o.head_dim;
  c.out_features = q + 2 * kv;
  c.segments = {q, kv, kv};
  if (o.n_kv_heads < tp_size) c.segment_parts = {tp_size, int(o.n_kv_heads), int(o.n_kv_heads)};  // replicated KV
  c.bias = o.bias;
  c.seed = o.seed;
  c.init_std = o.init_std;
  c.precision = o.precision;
  c.workspace = o.workspace;
  c.sequence_parallel = o.sequence_parallel;
  c.alloc = o.alloc;
  return c;
}

RowParallelOptions proj_options(const AttentionOptions& o) {
  RowParallelOptions r;
  r.name = o.proj_name;
  r.in_features = o.n_heads * o.head_dim;
  r.out_features = o.hidden;
  r.bias = o.bias;
  r.seed = o.seed;
  r.init_std = o.proj_init_std;
  r.precision = o.precision;
  r.workspace = o.workspace;
  r.sequence_parallel = o.sequence_parallel;
  r.alloc = o.alloc;
  return r;
}

}  // namespace

ParallelAttention::ParallelAttention(ProcessGroup& tp, const AttentionOptions& options, int64_t batch, int64_t seq,
                                     const ParallelAttention* share_with)
    : qkv(tp, qkv_options(resolved(tp, options), tp.size()), batch * seq,
          share_with && !options.recompute_output ? &share_with->qkv : nullptr),
      proj(tp, proj_options(resolved(tp, options)), batch * seq, share_with ? &share_with->proj : nullptr),
      options_(resolved(tp, options)) {
  heads_pp_ = options_.n_heads / tp.size();
  kv_heads_pp_ = std::max<int64_t>(1, options_.n_kv_heads / tp.size());
  if (options_.n_kv_heads < tp.size()) {  // collective over tp: the ranks sharing a KV head form a group
    const int sharing = tp.size() / int(options_.n_kv_heads);
    kv_group_ = std::make_unique<ProcessGroup>(tp.split(tp.rank() / sharing, tp.rank(), "kv-head"));
    if (options_.alloc == ParameterAlloc::Training)
      kv_grad_before_ = Tensor({2 * options_.head_dim * (options_.hidden + (options_.bias ? 1 : 0))});
  }
  head_dim_ = options_.head_dim;
  max_tokens_ = batch * seq;
  if (options_.rope) {
    TP_CHECK(options_.max_positions >= seq, ConfigError, "RoPE table of {} positions is shorter than the sequence {}",
             options_.max_positions, seq);
    rope_ = std::make_unique<RopeTable>(head_dim_, options_.max_positions, options_.rope_theta);
  }
  const int64_t width = (heads_pp_ + 2 * kv_heads_pp_) * head_dim_;
  if (share_with) {
    TP_CHECK_EQ(share_with->qkv_out_.numel(), max_tokens_ * width, "attention sharing activations");
    att_ = share_with->att_.view();
    datt_ = share_with->datt_.view();
    dqkv_ = share_with->dqkv_.view();
    if (!options_.recompute_output) {  // all of them (full recomputation)
      qkv_out_ = share_with->qkv_out_.view();
      lse_ = share_with->lse_.view();
      return;
    }
    qkv_out_ = Tensor({max_tokens_, width});
    lse_ = Tensor({batch, heads_pp_, seq});
    return;
  }
  qkv_out_ = Tensor({max_tokens_, width});
  att_ = Tensor({max_tokens_, heads_pp_ * head_dim_});
  lse_ = Tensor({batch, heads_pp_, seq});
  if (options_.alloc != ParameterAlloc::Training) return;  // inference: no backward
  dqkv_ = Tensor({max_tokens_, width});
  datt_ = Tensor({max_tokens_, heads_pp_ * head_dim_});
}

void ParallelAttention::share_gradient_scratch(const ParallelAttention& first) {
  TP_CHECK_EQ(first.dqkv_.numel(), dqkv_.numel(), "attention sharing gradient scratch");
  datt_ = first.datt_.view();
  dqkv_ = first.dqkv_.view();
}

void ParallelAttention::collect_parameters(std::vector<Parameter*>& out) {
  qkv.collect_parameters(out);
  proj.collect_parameters(out);
}

int64_t ParallelAttention::activation_bytes() const {
  int64_t bytes = qkv.activation_bytes() + proj.activation_bytes();
  for (const Tensor* t : {&qkv_out_, &att_, &lse_})
    if (t->owns_data()) bytes += int64_t(t->nbytes());
  return bytes;
}

void ParallelAttention::recompute_attention_output(int64_t B, int64_t T) {
  TP_PROFILE_SCOPE("attention core recompute");
  const AttentionDims dims{B, T, heads_pp_, kv_heads_pp_, head_dim_};
  core_forward(options_.precision, att_.f32(), lse_.f32(), qkv_out_.f32(), dims);  // lse: the same values again
  proj.keep_input(att_.f32(), B * T);
}

void ParallelAttention::forward(float* out, const float* inp, int64_t B, int64_t T) {
  const int64_t N = B * T, width = qkv_out_.dim(1);
  TP_CHECK(N <= max_tokens_, ShapeError, "attention: batch {} x sequence {} exceeds the size it was built for", B, T);
  qkv.forward(qkv_out_.f32(), inp, N);  // no communication
  if (rope_) {
    rope_forward(qkv_out_.f32(), width, N, T, 0, heads_pp_, *rope_);
    rope_forward(qkv_out_.f32() + heads_pp_ * head_dim_, width, N, T, 0, kv_heads_pp_, *rope_);
  }
  const AttentionDims dims{B, T, heads_pp_, kv_heads_pp_, head_dim_};
  {
    TP_PROFILE_SCOPE("attention core forward");
    core_forward(options_.precision, att_.f32(), lse_.f32(), qkv_out_.f32(), dims);
  }
  proj.forward(out, att_.f32(), N);  // the one all-reduce
}

void ParallelAttention::backward(float* dinp, const float* dout, const float* inp, int64_t B, int64_t T) {
  const int64_t N = B * T, width = qkv_out_.dim(1);
  if (options_.recompute_output) recompute_attention_output(B, T);  // another layer's since forward
  proj.backward(datt_.f32(), dout, att_.f32(), N);  // no communication
  const AttentionDims dims{B, T, heads_pp_, kv_heads_pp_, head_dim_};
  {
    TP_PROFILE_SCOPE("attention core backward");
    core_backward(options_.precision, dqkv_.f32(), datt_.f32(), att_.f32(), lse_.f32(), qkv_out_.f32(), dims);
  }
  if (rope_) {
    rope_backward(dqkv_.f32(), width, N, T, 0, heads_pp_, *rope_);
    rope_backward(dqkv_.f32() + heads_pp_ * head_dim_, width, N, T, 0, kv_heads_pp_, *rope_);
  }
  sum_replicated_kv_grads_begin();
  qkv.backward(dinp, dqkv_.f32(), inp, N);  // the one all-reduce
  sum_replicated_kv_grads_end();
}

// A KV head replicated on several ranks gets a partial k/v gradient on each (from that rank's query
// heads only); the true gradient is their sum. Backward accumulates (+=) into grads, so only this
// backward's contribution may be summed: set it aside, let backward add into zeros, all-reduce over
// the KV-head group, add the earlier value back.
void ParallelAttention::sum_replicated_kv_grads_begin() {
  if (!kv_group_) return;
  const int64_t in = options_.hidden, rows = 2 * head_dim_, first = heads_pp_ * head_dim_;
  float* saved = kv_grad_before_.f32();
  float* w = qkv.weight.grad.f32() + first * in;
  std::copy_n(w, rows * in, saved);
  std::fill_n(w, rows * in, 0.0f);
  if (options_.bias) {
    float* b = qkv.bias.grad.f32() + first;
    std::copy_n(b, rows, saved + rows * in);
    std::fill_n(b, rows, 0.0f);
  }
}

void ParallelAttention::sum_replicated_kv_grads_end() {
  if (!kv_group_) return;
  const int64_t in = options_.hidden, rows = 2 * head_dim_, first = heads_pp_ * head_dim_;
  const float* saved = kv_grad_before_.f32();
  float* w = qkv.weight.grad.f32() + first * in;
  kv_group_->all_reduce(std::span<float>(w, size_t(rows * in)));  // the KV-head group's one all-reduce
  for (int64_t i = 0; i < rows * in; ++i) w[i] += saved[i];
  if (options_.bias) {
    float* b = qkv.bias.grad.f32() + first;
    kv_group_->all_reduce(std::span<float>(b, size_t(rows)));
    for (int64_t i = 0; i < rows; ++i) b[i] += saved[rows * in + i];
  }
}

void ParallelAttention::forward_cached(float* out, const float* inp, int64_t B, int64_t n_new, int64_t past_len,
                                       const KvCacheSlice& cache) {
  const int64_t N = B * n_new, width = qkv_out_.dim(1), q_width = heads_pp_ * head_dim_,
                kv_width = kv_heads_pp_ * head_dim_;
  TP_CHECK(N <= max_tokens_, ShapeError, "attention: batch {} x {} new positions exceed the size it was built for",
           B, n_new);
  TP_CHECK(past_len >= 0 && past_len + n_new <= cache.max_seq, ShapeError,
           "attention: positions {}..{} do not fit the KV cache of {} positions", past_len, past_len + n_new - 1,
           cache.max_seq);
  qkv.forward(qkv_out_.f32(), inp, N);  // no communication
  if (rope_) {
    TP_CHECK(past_len + n_new <= rope_->max_positions(), ShapeError,
             "attention: position {} is past the model's {} positions", past_len + n_new - 1, rope_->max_positions());
    rope_forward(qkv_out_.f32(), width, N, n_new, past_len, heads_pp_, *rope_);
    rope_forward(qkv_out_.f32() + q_width, width, N, n_new, past_len, kv_heads_pp_, *rope_);
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < n_new; ++t) {
      const float* row = qkv_out_.f32() + (b * n_new + t) * width;
      const int64_t at = (b * cache.max_seq + past_len + t) * kv_width;
      std::copy_n(row + q_width, kv_width, cache.k + at);
      std::copy_n(row + q_width + kv_width, kv_width, cache.v + at);
    }
  const AttentionDims dims{B, n_new, heads_pp_, kv_heads_pp_, head_dim_};
  attention_forward_cached(att_.f32(), qkv_out_.f32(), width, cache.k, cache.v, cache.max_seq, past_len, n_new, dims);
  proj.forward(out, att_.f32(), N);  // the one all-reduce
}

void ParallelAttention::forward_cached(float* out, const float* inp, int64_t B, int64_t n_new, const CacheRows& rows,
                                       const KvCacheSlice& cache) {
  const int64_t N = B * n_new, width = qkv_out_.dim(1), q_width = heads_pp_ * head_dim_,
                kv_width = kv_heads_pp_ * head_dim_;
  TP_CHECK(N <= max_tokens_, ShapeError, "attention: batch {} x {} new positions exceed the size it was built for",
           B, n_new);
  qkv.forward(qkv_out_.f32(), inp, N);  // one GEMM for all rows; no communication
  // Each row alone, exactly as a batch of one at its own position: RoPE angles, cache row, and the
  // causal range end at that row's length.
  const AttentionDims dims{1, n_new, heads_pp_, kv_heads_pp_, head_dim_};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t past = rows.past[b], slot = rows.slot[b];
    TP_CHECK(past >= 0 && past + n_new <= cache.max_seq, ShapeError,
             "attention: positions {}..{} do not fit the KV cache of {} positions", past, past + n_new - 1,
             cache.max_seq);
    float* row0 = qkv_out_.f32() + b * n_new * width;
    if (rope_) {
      TP_CHECK(past + n_new <= rope_->max_positions(), ShapeError,
               "attention: position {} is past the model's {} positions", past + n_new - 1, rope_->max_positions());
      rope_forward(row0, width, n_new, n_new, past, heads_pp_, *rope_);
      rope_forward(row0 + q_width, width, n_new, n_new, past, kv_heads_pp_, *rope_);
    }
    float* k_row = cache.k + slot * cache.max_seq * kv_width;
    float* v_row = cache.v + slot * cache.max_seq * kv_width;
    for (int64_t t = 0; t < n_new; ++t) {
      std::copy_n(row0 + t * width + q_width, kv_width, k_row + (past + t) * kv_width);
      std::copy_n(row0 + t * width + q_width + kv_width, kv_width, v_row + (past + t) * kv_width);
    }
    attention_forward_cached(att_.f32() + b * n_new * q_width, row0, width, k_row, v_row, cache.max_seq, past, n_new,
                             dims);
  }
  proj.forward(out, att_.f32(), N);  // the one all-reduce
}

}  // namespace tensorpar
