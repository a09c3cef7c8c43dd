// Choosing the next token from logits: greedy at temperature 0, otherwise softmax(logits / T)
// restricted to the top-k and/or the top-p nucleus. The random draw is Philox keyed by (seed, step),
// so every rank picks the same token from the same logits without talking.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace tensorpar {

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy
  int64_t top_k = 0;         // 0: whole vocabulary
  float top_p = 1.0f;        // 1: no nucleus cut
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);  // check(options) first
  // ConfigError naming the flag: temperature NaN, infinite or negative, top-k negative, top-p outside (0, 1].
  static void check(const SamplingOptions& options);
  // Token for decoding step `step` from logits (vocab).
  int32_t sample(std::span<const float> logits, uint64_t step);

 private:
  SamplingOptions options_;
  std::vector<int32_t> order_;
  std::vector<float> probs_;
};

}  // namespace tensorpar
