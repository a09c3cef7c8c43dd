#include "tensorpar/infer/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/rng.hpp"

namespace tensorpar {

Sampler::Sampler(const SamplingOptions& options) : options_(options) { check(options); }

void Sampler::check(const SamplingOptions& options) {
  TP_CHECK(std::isfinite(options.temperature) && options.temperature >= 0, ConfigError,
           "--temperature must be a finite number >= 0 (got {})", options.temperature);
  TP_CHECK(options.top_k >= 0, ConfigError, "--top-k must be >= 0 (got {})", options.top_k);
  TP_CHECK(options.top_p > 0 && options.top_p <= 1, ConfigError, "--top-p must be in (0, 1] (got {})", options.top_p);
}

int32_t Sampler::sample(std::span<const float> logits, uint64_t step) {
  const int64_t V = int64_t(logits.size());
  if (options_.temperature == 0.0f)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  order_.resize(size_t(V));
  std::iota(order_.begin(), order_.end(), 0);
  const int64_t k = options_.top_k > 0 ? std::min(options_.top_k, V) : V;
  // descending by logit, ties by index: deterministic on every rank
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
  probs_.resize(size_t(k));
  const double max_logit = logits[order_[0]];
  double total = 0;
  for (int64_t i = 0; i < k; ++i) {
    probs_[size_t(i)] = float(std::exp((double(logits[order_[size_t(i)]]) - max_logit) / options_.temperature));
    total += probs_[size_t(i)];
  }
  int64_t keep = k;
  if (options_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double mass = 0;
    for (int64_t i = 0; i < k; ++i) {
      mass += probs_[size_t(i)] / total;
      if (mass >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    total = 0;
    for (int64_t i = 0; i < keep; ++i) total += probs_[size_t(i)];
  }
  const double u = double(philox_uniform(philox_key(options_.seed, "sample"), step)) * total;
  double cumulative = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += probs_[size_t(i)];
    if (u < cumulative) return order_[size_t(i)];
  }
  return order_[size_t(keep - 1)];
}

}  // namespace tensorpar
