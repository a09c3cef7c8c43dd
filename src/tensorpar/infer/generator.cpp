#include "tensorpar/infer/generator.hpp"

#include <algorithm>
#include <chrono>

namespace tensorpar {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

Generator::Generator(TransformerLM& model, int64_t batch, int64_t max_seq)
    : model_(model), batch_(batch), cache_(model, batch, max_seq) {
  TP_CHECK(batch <= model.batch(), ConfigError, "generating {} rows needs a model built for at least {} (it has {})",
           batch, batch, model.batch());
}

void Generator::prefill(float* logits, const int32_t* prompts, int64_t prompt_len) {
  const int64_t B = batch_;
  TP_CHECK(prompt_len >= 1, ConfigError, "the prompt is empty; give at least one token");
  TP_CHECK(prompt_len <= cache_.max_seq(), ConfigError,
           "the prompt of {} tokens is longer than the {} positions available", prompt_len, cache_.max_seq());
  cache_.clear();
  // as many positions per forward as the model's activation buffers hold for B rows
  const int64_t chunk = std::max<int64_t>(1, model_.batch() * model_.seq() / B);
  for (int64_t start = 0; start < prompt_len; start += chunk) {
    const int64_t n = std::min(chunk, prompt_len - start);
    chunk_.resize(size_t(B * n));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(prompts + b * prompt_len + start, n, chunk_.begin() + b * n);
    model_.forward_cached(logits, chunk_.data(), B, n, cache_.length(), cache_.layers());
    cache_.advance(n);
  }
}

void Generator::decode(float* logits, const int32_t* tokens) {
  TP_CHECK(cache_.length() >= 1, ShapeError, "decode before prefill");
  model_.forward_cached(logits, tokens, batch_, 1, cache_.length(), cache_.layers());
  cache_.advance(1);
}

GenerationResult Generator::generate(const int32_t* prompts, int64_t prompt_len, int64_t max_new_tokens,
                                     const SamplingOptions& sampling) {
  const int64_t B = batch_, V = model_.config().vocab_size;
  GenerationResult r;
  // the last sampled token is never fed back, so n new tokens need prompt + n - 1 positions
  const int64_t n = std::max<int64_t>(0, std::min(max_new_tokens, cache_.max_seq() - prompt_len + 1));
  r.new_tokens = n;
  r.tokens.resize(size_t(B * n));
  if (n == 0) return r;
  Sampler sampler(sampling);
  std::vector<float> logits(size_t(B * V));
  std::vector<int32_t> next(static_cast<size_t>(B));
  auto pick = [&](int64_t i) {
    for (int64_t b = 0; b < B; ++b) {
      next[size_t(b)] = sampler.sample(std::span<const float>(logits).subspan(size_t(b * V), size_t(V)),
                                       uint64_t(i * B + b));
      r.tokens[size_t(b * n + i)] = next[size_t(b)];
    }
  };
  auto t0 = std::chrono::steady_clock::now();
  prefill(logits.data(), prompts, prompt_len);
  pick(0);
  r.prefill_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 1; i < n; ++i) {
    decode(logits.data(), next.data());
    pick(i);
  }
  r.decode_seconds = seconds_since(t0);
  return r;
}

}  // namespace tensorpar
