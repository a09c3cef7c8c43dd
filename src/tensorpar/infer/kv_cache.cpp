#include "tensorpar/infer/kv_cache.hpp"

namespace tensorpar {

KvCache::KvCache(const TransformerLM& model, int64_t batch, int64_t max_seq) : batch_(batch), max_seq_(max_seq) {
  const ModelConfig& c = model.config();
  TP_CHECK(batch >= 1 && max_seq >= 1 && max_seq <= c.max_seq, ConfigError,
           "a KV cache of {} rows x {} positions does not fit a model of {} positions", batch, max_seq, c.max_seq);
  const int64_t width = model.kv_heads_per_partition() * c.head_dim();
  const int64_t layers = model.stage_layers();  // a pipeline stage caches its own layers only
  k_ = Tensor({layers, batch, max_seq, width});
  v_ = Tensor({layers, batch, max_seq, width});
  const int64_t per_layer = batch * max_seq * width;
  for (int64_t l = 0; l < layers; ++l) slices_.push_back({k_.f32() + l * per_layer, v_.f32() + l * per_layer, max_seq});
}

void KvCache::advance(int64_t n_new) {
  TP_CHECK(n_new >= 0 && length_ + n_new <= max_seq_, ShapeError, "KV cache of {} positions cannot grow from {} by {}",
           max_seq_, length_, n_new);
  length_ += n_new;
}

}  // namespace tensorpar
