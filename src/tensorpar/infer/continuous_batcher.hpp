// ContinuousBatcher: many generation requests sharing one model, each in its own row ("slot") of a
// KV cache of max_batch rows. A request joins at the next step: its prompt is run alone into its
// slot (prefill, in chunks as Generator does for a batch of one) and gives its first token; from the
// next step on it is one row of the batched decode, where every row sits at its own position
// (CacheRows), so each request gets exactly the logits it would get generating alone. A request that
// finishes (max tokens, cache full) or is cancelled frees its slot for the next waiting one.
//
// Deterministic: the same sequence of add/cancel/step calls gives the same tokens on every rank, so
// a server only has to broadcast the adds and cancels (cli/serve_command.cpp) to keep the TP ranks in
// lock-step. Collective over model.tp() in step() only.
#pragma once
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "tensorpar/infer/kv_cache.hpp"
#include "tensorpar/infer/sampler.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {

struct BatchRequest {
  int64_t id = 0;  // the caller's, unique among live requests
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 1;
  SamplingOptions sampling;
};

// One token a step produced for one request.
struct StepToken {
  int64_t id = 0;
  int32_t token = 0;
  bool last = false;              // the request is done (max tokens or positions) and its slot free
  const float* logits = nullptr;  // (vocab) the token was drawn from; valid until the next step()
};

class ContinuousBatcher {
 public:
  // `model` must be built for at least max_batch rows; the cache holds max_seq positions per slot.
  // Prompts are prefilled prefill_chunk positions per pass (capped by the model's buffers).
  ContinuousBatcher(TransformerLM& model, int64_t max_batch, int64_t max_seq, int64_t prefill_chunk = 256);

  // Queues a request (ConfigError for an empty prompt, ids outside the vocabulary, a prompt longer
  // than max_seq, or max_new_tokens < 1). It joins at the first step with a free slot, in order.
  void add(BatchRequest request);
  // Drops a waiting or running request; no-op for an unknown id. Its slot is free at the next step.
  void cancel(int64_t id);
  // Admits waiting requests into free slots (one prefill pass each, their first token), then one
  // batched decode over the requests admitted in earlier steps. Empty when there is nothing to do.
  std::vector<StepToken> step();

  int64_t waiting() const { return int64_t(waiting_.size()); }
  int64_t active() const;  // slots in use
  int64_t max_batch() const { return max_batch_; }
  int64_t max_seq() const { return cache_.max_seq(); }

 private:
  struct Slot {
    bool used = false;
    int64_t id = 0, length = 0, generated = 0, limit = 0;  // cached positions, tokens so far, tokens allowed
    int32_t next = 0;                                      // last token drawn, fed at the next decode
    Sampler sampler{SamplingOptions{}};
  };
  void prefill(Slot& slot, int64_t index, const std::vector<int32_t>& prompt);
  StepToken draw(Slot& slot, const float* logits);

  TransformerLM& model_;
  int64_t max_batch_, prefill_chunk_, vocab_;
  KvCache cache_;
  std::vector<Slot> slots_;
  std::deque<BatchRequest> waiting_;
  std::vector<float> decode_logits_;   // (max_batch, vocab): the rows of the last decode
  std::vector<float> prefill_logits_;  // (max_batch, vocab): per slot, its prompt's last position
  std::vector<int64_t> rows_slot_, rows_past_;
  std::vector<int32_t> rows_token_;
};

}  // namespace tensorpar
