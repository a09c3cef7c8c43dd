#include "tensorpar/parallel/parallel_attention.hpp"

#include "tensorpar/core/divide.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/attention.hpp"

namespace tensorpar {

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
  TP_CHECK(o.n_kv_heads % tp.size() == 0, ConfigError,
           "{} key/value heads cannot be split over {} tensor-parallel ranks; use a TP degree that divides {}",
           o.n_kv_heads, tp.size(), o.n_kv_heads);
  return o;
}

namespace {

ColumnParallelOptions qkv_options(const AttentionOptions& o) {
  ColumnParallelOptions c;
  c.name = o.qkv_name;
  c.in_features = o.hidden;
  const int64_t q = o.n_heads * o.head_dim, kv = o.n_kv_heads * o.head_dim;
  c.out_features = q + 2 * kv;
  c.segments = {q, kv, kv};
  c.bias = o.bias;
  c.seed = o.seed;
  c.init_std = o.init_std;
  c.precision = o.precision;
  c.workspace = o.workspace;
  c.sequence_parallel = o.sequence_parallel;
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
  return r;
}

}  // namespace

ParallelAttention::ParallelAttention(ProcessGroup& tp, const AttentionOptions& options, int64_t batch, int64_t seq,
                                     const ParallelAttention* share_with)
    : qkv(tp, qkv_options(resolved(tp, options)), batch * seq,
          share_with && !options.recompute_output ? &share_with->qkv : nullptr),
      proj(tp, proj_options(resolved(tp, options)), batch * seq, share_with ? &share_with->proj : nullptr),
      options_(resolved(tp, options)) {
  heads_pp_ = options_.n_heads / tp.size();
  kv_heads_pp_ = options_.n_kv_heads / tp.size();
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
  dqkv_ = Tensor({max_tokens_, width});
  att_ = Tensor({max_tokens_, heads_pp_ * head_dim_});
  datt_ = Tensor({max_tokens_, heads_pp_ * head_dim_});
  lse_ = Tensor({batch, heads_pp_, seq});
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
  attention_forward(att_.f32(), lse_.f32(), qkv_out_.f32(), dims);  // lse: the same values again
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
    attention_forward(att_.f32(), lse_.f32(), qkv_out_.f32(), dims);
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
    attention_backward(dqkv_.f32(), datt_.f32(), att_.f32(), lse_.f32(), qkv_out_.f32(), dims);
  }
  if (rope_) {
    rope_backward(dqkv_.f32(), width, N, T, 0, heads_pp_, *rope_);
    rope_backward(dqkv_.f32() + heads_pp_ * head_dim_, width, N, T, 0, kv_heads_pp_, *rope_);
  }
  qkv.backward(dinp, dqkv_.f32(), inp, N);  // the one all-reduce
}

}  // namespace tensorpar
