// Gives every parameter of a model TP-invariant random values (keyed by name and global index), large
// enough that attention is far from uniform and logits far from zero; norm weights around 1. The
// padded vocabulary rows stay zero. Same values at every TP degree for the same seed.
#pragma once
#include <functional>
#include <string>

#include "tensorpar/core/rng.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar::testing {

inline void randomize_weights(TransformerLM& model, uint64_t seed, float scale = 0.3f) {
  const int64_t vocab = model.config().vocab_size;
  for (Parameter* p : model.parameters()) {
    const bool norm = p->global_shape.size() == 1 && p->name.find("bias") == std::string::npos;
    const bool vocab_table = p->name == "wte.weight" || p->name == "model.embed_tokens.weight" || p->name == "lm_head.weight";
    const int64_t cols = p->global_shape.size() == 2 ? p->global_shape[1] : 1;
    const PhiloxKey key = philox_key(seed, p->name);
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      const int64_t g = p->global_index(i);
      const float r = philox_normal(key, uint64_t(g));
      float v = norm ? 1.0f + 0.2f * r : scale * r;
      if (vocab_table && g / cols >= vocab) v = 0.0f;
      p->value.f32()[i] = v;
    }
  }
}

}  // namespace tensorpar::testing
