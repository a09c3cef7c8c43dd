// AdamW optimiser step, torch.optim.AdamW semantics (decoupled weight decay, bias-corrected moments).
#pragma once
#include <cstdint>

namespace tensorpar {

struct AdamWParams {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  int64_t step;  // 1-based: the number of this update, counting it
};

// One step on param (n) with grad (n) and moment buffers m (n), v (n), updated in place:
//   param -= lr*wd*param; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   param -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p);

}  // namespace tensorpar
