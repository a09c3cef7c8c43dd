#include "tensorpar/train/adamw.hpp"

#include "tensorpar/kernels/adamw.hpp"

namespace tensorpar {

AdamW::AdamW(std::vector<Parameter*> parameters, const AdamWConfig& config)
    : parameters_(std::move(parameters)), config_(config) {
  for (Parameter* p : parameters_) {
    m_.emplace_back(p->value.shape());
    v_.emplace_back(p->value.shape());
  }
}

void AdamW::step(float lr) {
  ++step_;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    Parameter& p = *parameters_[i];
    const AdamWParams params{lr, config_.beta1, config_.beta2, config_.eps,
                             p.weight_decay ? config_.weight_decay : 0.0f, step_};
    adamw_update(p.value.f32(), p.grad.f32(), m_[i].f32(), v_[i].f32(), p.value.numel(), params);
  }
}

}  // namespace tensorpar
