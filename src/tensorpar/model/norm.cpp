#include "tensorpar/model/norm.hpp"

#include "tensorpar/kernels/layernorm.hpp"
#include "tensorpar/kernels/rmsnorm.hpp"

namespace tensorpar {

Norm::Norm(NormKind kind, const std::string& name, int64_t hidden, float eps, int group_size, int64_t max_tokens,
           const Norm* share_with, ParameterAlloc alloc)
    : kind_(kind), hidden_(hidden), eps_(eps) {
  weight = make_replicated(name + ".weight", {hidden}, group_size, false, alloc);
  init_constant(weight, 1.0f);
  if (kind == NormKind::LayerNorm) bias = make_replicated(name + ".bias", {hidden}, group_size, false, alloc);
  if (share_with) {
    TP_CHECK_EQ(share_with->rstd_.numel(), max_tokens, "norm sharing activations");
    mean_ = share_with->mean_.view();
    rstd_ = share_with->rstd_.view();
    return;
  }
  if (kind == NormKind::LayerNorm) mean_ = Tensor({max_tokens});  // RMSNorm has no mean
  rstd_ = Tensor({max_tokens});
}

int64_t Norm::activation_bytes() const {
  return int64_t((mean_.owns_data() ? mean_.nbytes() : 0) + (rstd_.owns_data() ? rstd_.nbytes() : 0));
}

void Norm::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (kind_ == NormKind::LayerNorm) out.push_back(&bias);
}

void Norm::forward(float* out, const float* inp, int64_t N) {
  TP_CHECK(N <= rstd_.numel(), ShapeError, "norm {}: {} tokens exceed the {} it was sized for", weight.name, N,
           rstd_.numel());
  if (kind_ == NormKind::LayerNorm)
    layernorm_forward(out, mean_.f32(), rstd_.f32(), inp, weight.value.f32(), bias.value.f32(), N, hidden_, eps_);
  else
    rmsnorm_forward(out, rstd_.f32(), inp, weight.value.f32(), N, hidden_, eps_);
}

void Norm::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  if (kind_ == NormKind::LayerNorm)
    layernorm_backward(dinp, weight.grad.f32(), bias.grad.f32(), dout, inp, weight.value.f32(), mean_.f32(),
                       rstd_.f32(), N, hidden_);
  else
    rmsnorm_backward(dinp, weight.grad.f32(), dout, inp, weight.value.f32(), rstd_.f32(), N, hidden_);
}

}  // namespace tensorpar
