#include "tensorpar/infer/continuous_batcher.hpp"

#include <algorithm>

namespace tensorpar {

ContinuousBatcher::ContinuousBatcher(TransformerLM& model, int64_t max_batch, int64_t max_seq, int64_t prefill_chunk)
    : model_(model),
      max_batch_(max_batch),
      prefill_chunk_(std::max<int64_t>(1, std::min(prefill_chunk, model.batch() * model.seq()))),
      vocab_(model.config().vocab_size),
      cache_(model, max_batch, max_seq),
      slots_(size_t(max_batch)),
      decode_logits_(size_t(max_batch * vocab_)),
      prefill_logits_(size_t(max_batch * vocab_)) {
  TP_CHECK(max_batch <= model.batch(), ConfigError, "batching {} requests needs a model built for at least {} rows (it has {})",
           max_batch, max_batch, model.batch());
}

void ContinuousBatcher::add(BatchRequest request) {
  TP_CHECK(!request.prompt.empty(), ConfigError, "the prompt is empty; give at least one token");
  TP_CHECK(int64_t(request.prompt.size()) <= max_seq(), ConfigError,
           "the prompt has {} tokens but only {} positions are available", request.prompt.size(), max_seq());
  TP_CHECK(request.max_new_tokens >= 1, ConfigError, "max_new_tokens must be at least 1 (got {})",
           request.max_new_tokens);
  for (int32_t id : request.prompt)
    TP_CHECK(id >= 0 && id < vocab_, ConfigError, "prompt token {} is outside the model's vocabulary of {}", id, vocab_);
  Sampler check(request.sampling);  // throws on bad options now, not inside a collective step
  waiting_.push_back(std::move(request));
}

void ContinuousBatcher::cancel(int64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if (it->id == id) {
      waiting_.erase(it);
      return;
    }
  for (Slot& s : slots_)
    if (s.used && s.id == id) s.used = false;
}

int64_t ContinuousBatcher::active() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.used; });
}

// As Generator::prefill for a batch of one: the same chunks, so the same floating-point result.
void ContinuousBatcher::prefill(Slot& slot, int64_t index, const std::vector<int32_t>& prompt) {
  const int64_t n = int64_t(prompt.size());
  float* logits = prefill_logits_.data() + index * vocab_;
  for (int64_t start = 0; start < n; start += prefill_chunk_) {
    const int64_t m = std::min(prefill_chunk_, n - start);
    const int64_t past = start;
    model_.forward_cached(logits, prompt.data() + start, 1, m, CacheRows{&index, &past}, cache_.layers());
  }
  slot.length = n;
}

StepToken ContinuousBatcher::draw(Slot& slot, const float* logits) {
  StepToken t;
  t.id = slot.id;
  t.logits = logits;
  // step = tokens drawn so far: what Generator uses for a batch of one, so seeded sampling matches too
  t.token = slot.sampler.sample(std::span<const float>(logits, size_t(vocab_)), uint64_t(slot.generated));
  slot.next = t.token;
  ++slot.generated;
  t.last = slot.generated >= slot.limit;
  if (t.last) slot.used = false;
  return t;
}

std::vector<StepToken> ContinuousBatcher::step() {
  std::vector<StepToken> out;
  // decode rows: requests that already hold a token to feed (admitted in an earlier step)
  rows_slot_.clear();
  rows_past_.clear();
  rows_token_.clear();
  for (int64_t i = 0; i < max_batch_; ++i)
    if (slots_[size_t(i)].used) {
      rows_slot_.push_back(i);
      rows_past_.push_back(slots_[size_t(i)].length);
      rows_token_.push_back(slots_[size_t(i)].next);
    }
  for (int64_t i = 0; i < max_batch_ && !waiting_.empty(); ++i) {
    Slot& s = slots_[size_t(i)];
    if (s.used) continue;
    BatchRequest r = std::move(waiting_.front());
    waiting_.pop_front();
    s.used = true;
    s.id = r.id;
    s.generated = 0;
    // the last token drawn is never fed back: n new tokens need prompt + n - 1 positions
    s.limit = std::min(r.max_new_tokens, max_seq() - int64_t(r.prompt.size()) + 1);
    s.sampler = Sampler(r.sampling);
    prefill(s, i, r.prompt);
    out.push_back(draw(s, prefill_logits_.data() + i * vocab_));
  }
  const int64_t B = int64_t(rows_slot_.size());
  if (B > 0) {
    model_.forward_cached(decode_logits_.data(), rows_token_.data(), B, 1,
                          CacheRows{rows_slot_.data(), rows_past_.data()}, cache_.layers());
    for (int64_t b = 0; b < B; ++b) {
      Slot& s = slots_[size_t(rows_slot_[size_t(b)])];
      s.length += 1;
      out.push_back(draw(s, decode_logits_.data() + b * vocab_));
    }
  }
  return out;
}

}  // namespace tensorpar
