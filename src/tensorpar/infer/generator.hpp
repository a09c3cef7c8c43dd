// Generator: autoregressive generation with a KV cache. The prompt is run once (prefill, in chunks
// of what the model's activation buffers hold), then one token per step (decode), each step running
// the blocks over only the new position against the cached keys/values. Every rank computes the
// same whole logits (vocab-parallel head + all-gather) and draws the same token (Philox keyed by
// step), so the ranks stay in lock-step without exchanging tokens.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "tensorpar/infer/kv_cache.hpp"
#include "tensorpar/infer/sampler.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {

struct GenerationResult {
  std::vector<int32_t> tokens;  // (B, new_tokens): the generated tokens of each row
  int64_t new_tokens = 0;       // per row
  double prefill_seconds = 0;   // prompt, up to and including the first token's logits
  double decode_seconds = 0;    // every later step
};

class Generator {
 public:
  // Collective use over model.tp(). `model` must be built with batch >= `batch`; the cache holds
  // `max_seq` positions per row (prompt + new tokens - 1).
  Generator(TransformerLM& model, int64_t batch, int64_t max_seq);

  // Starts over with prompts (B, prompt_len), equal lengths; logits (B, vocab_size) of the last position.
  void prefill(float* logits, const int32_t* prompts, int64_t prompt_len);
  // Appends one token per row, tokens (B); logits (B, vocab_size) for the position after it.
  void decode(float* logits, const int32_t* tokens);
  // prefill + up to max_new_tokens samples per row (fewer if the cache fills).
  GenerationResult generate(const int32_t* prompts, int64_t prompt_len, int64_t max_new_tokens,
                            const SamplingOptions& sampling);

  const KvCache& cache() const { return cache_; }

 private:
  TransformerLM& model_;
  int64_t batch_;
  KvCache cache_;
  std::vector<int32_t> chunk_;  // (B, chunk) prompt columns
};

}  // namespace tensorpar
