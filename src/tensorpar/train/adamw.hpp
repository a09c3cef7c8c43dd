// AdamW over a model's parameters (decoupled weight decay, PyTorch semantics). Moments are f32,
// allocated once per parameter at construction; only parameters marked weight_decay are decayed
// (2-D weights, not norms or biases).
#pragma once
#include <vector>

#include "tensorpar/parallel/parameter.hpp"

namespace tensorpar {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW(std::vector<Parameter*> parameters, const AdamWConfig& config);
  // One update of every parameter from its grad with learning rate lr.
  void step(float lr);
  int64_t steps_taken() const { return step_; }
  // Restoring a checkpoint: the update count (bias correction) and the moments of parameter i.
  void set_steps_taken(int64_t steps) { step_ = steps; }
  Tensor& exp_avg(size_t i) { return m_.at(i); }
  Tensor& exp_avg_sq(size_t i) { return v_.at(i); }
  const AdamWConfig& config() const { return config_; }
  // Bytes of state (m and v of every parameter); ZeroOptimizer holds 1/D of it.
  int64_t optimizer_bytes() const {
    int64_t bytes = 0;
    for (const Tensor& t : m_) bytes += 2 * int64_t(t.nbytes());
    return bytes;
  }

 private:
  std::vector<Parameter*> parameters_;
  AdamWConfig config_;
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
};

}  // namespace tensorpar
