#include "tensorpar/parallel/parallel_mlp.hpp"

#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/activations.hpp"
#include "tensorpar/kernels/activations_bf16.hpp"

namespace tensorpar {

namespace {

ColumnParallelOptions fc_options(const MlpOptions& o) {
  ColumnParallelOptions c;
  c.name = o.fc_name;
  c.in_features = o.hidden;
  c.bias = o.bias;
  c.seed = o.seed;
  c.init_std = o.init_std;
  c.precision = o.precision;
  c.workspace = o.workspace;
  c.sequence_parallel = o.sequence_parallel;
  c.alloc = o.alloc;
  if (o.activation == MlpActivation::SwiGLU) {
    c.out_features = 2 * o.ffn_hidden;
    c.segments = {o.ffn_hidden, o.ffn_hidden};  // [gate | up], each split over the group
  } else {
    c.out_features = o.ffn_hidden;
  }
  return c;
}

RowParallelOptions proj_options(const MlpOptions& o) {
  RowParallelOptions r;
  r.name = o.proj_name;
  r.in_features = o.ffn_hidden;
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

ParallelMLP::ParallelMLP(ProcessGroup& tp, const MlpOptions& options, int64_t max_tokens, const ParallelMLP* share_with)
    : fc(tp, fc_options(options), max_tokens, share_with ? &share_with->fc : nullptr),
      proj(tp, proj_options(options), max_tokens, share_with ? &share_with->proj : nullptr),
      options_(options) {
  ffn_per_partition_ = proj.in_features_per_partition();
  const int64_t fc_cols = fc.out_features_per_partition();
  if (share_with) {
    TP_CHECK_EQ(share_with->pre_.numel(), max_tokens * fc_cols, "MLP sharing activations");
    pre_ = share_with->pre_.view();
    dpre_ = share_with->dpre_.view();
    act_ = share_with->act_.view();
    dact_ = share_with->dact_.view();
    return;
  }
  pre_ = Tensor({max_tokens, fc_cols});
  act_ = Tensor({max_tokens, ffn_per_partition_});
  if (options_.alloc != ParameterAlloc::Training) return;  // inference: no backward
  dpre_ = Tensor({max_tokens, fc_cols});
  dact_ = Tensor({max_tokens, ffn_per_partition_});
}

void ParallelMLP::share_gradient_scratch(const ParallelMLP& first) {
  TP_CHECK_EQ(first.dpre_.numel(), dpre_.numel(), "MLP sharing gradient scratch");
  dpre_ = first.dpre_.view();
  dact_ = first.dact_.view();
}

void ParallelMLP::collect_parameters(std::vector<Parameter*>& out) {
  fc.collect_parameters(out);
  proj.collect_parameters(out);
}

int64_t ParallelMLP::activation_bytes() const {
  int64_t bytes = fc.activation_bytes() + proj.activation_bytes();
  for (const Tensor* t : {&pre_, &act_})
    if (t->owns_data()) bytes += int64_t(t->nbytes());
  return bytes;
}

void ParallelMLP::recompute(const float* inp, int64_t N) {
  const int64_t f = ffn_per_partition_;
  fc.forward(pre_.f32(), inp, N);
  if (options_.activation == MlpActivation::Gelu)
    gelu_forward(act_.f32(), pre_.f32(), N * f);
  else
    swiglu_forward(act_.f32(), pre_.f32(), pre_.f32() + f, N, f, 2 * f);
  proj.keep_input(act_.f32(), N);  // bf16: the copy proj's dW reads
}

void ParallelMLP::forward(float* out, const float* inp, int64_t N) {
  const int64_t f = ffn_per_partition_;
  fc.forward(pre_.f32(), inp, N);  // no communication
  if (options_.precision == Precision::BF16 && proj.quantized_weight().empty()) {
    // the activation writes the bf16 operand of proj's GEMM directly (kept for proj's dW too); the f32
    // act_ is not needed in bf16 mode
    {
      TP_PROFILE_SCOPE("mlp activation forward");
      if (options_.activation == MlpActivation::Gelu)
        gelu_forward_bf16(proj.kept_input_bf16(), pre_.f32(), N * f);
      else
        swiglu_forward_bf16(proj.kept_input_bf16(), pre_.f32(), pre_.f32() + f, N, f, 2 * f);
    }
    proj.forward_kept_input(out, N);  // the one all-reduce
    return;
  }
  {
    TP_PROFILE_SCOPE("mlp activation forward");
    if (options_.activation == MlpActivation::Gelu)
      gelu_forward(act_.f32(), pre_.f32(), N * f);
    else
      swiglu_forward(act_.f32(), pre_.f32(), pre_.f32() + f, N, f, 2 * f);
  }
  proj.forward(out, act_.f32(), N);  // the one all-reduce
}

void ParallelMLP::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  const int64_t f = ffn_per_partition_;
  proj.backward(dact_.f32(), dout, act_.f32(), N);  // no communication (bf16: reads its bf16 input copy)
  if (options_.precision == Precision::BF16 && options_.activation == MlpActivation::Gelu) {
    // GELU's backward writes fc's bf16 output gradient and fc's bias gradient in one pass
    gelu_backward_bf16(fc.output_grad_bf16(), options_.bias ? fc.bias.grad.f32() : nullptr, dact_.f32(), pre_.f32(),
                       N, f);
    fc.backward_kept_grad(dinp, inp, N);  // the one all-reduce
    return;
  }
  if (options_.activation == MlpActivation::Gelu)
    gelu_backward(dpre_.f32(), dact_.f32(), pre_.f32(), N * f);
  else
    swiglu_backward(dpre_.f32(), dpre_.f32() + f, dact_.f32(), pre_.f32(), pre_.f32() + f, N, f, 2 * f);
  fc.backward(dinp, dpre_.f32(), inp, N);  // the one all-reduce
}

}  // namespace tensorpar
