// The small models the model tests build: every size splits over 1, 2 and 4 ranks, and the
// vocabulary (300) is padded differently at each TP degree, so padding is always exercised.
#pragma once
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "tensorpar/kernels/matmul.hpp"
#include "tensorpar/model/config.hpp"

namespace tensorpar::testing {

inline ModelConfig tiny_config(ModelFamily family, int64_t layers = 2, int64_t heads = 4) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;
  c.max_seq = 8;
  c.hidden = 24;
  c.layers = layers;
  c.heads = heads;
  c.ffn_hidden = family == ModelFamily::Llama ? 40 : 0;
  c.kv_heads = family == ModelFamily::Llama ? heads : 0;
  c.tie_embeddings = family == ModelFamily::Gpt2;
  c.norm_eps = 1e-5f;
  return c;
}

// n pseudo-random token ids in [0, vocab), the same on every rank for the same seed.
inline std::vector<int32_t> random_tokens(uint32_t seed, size_t n, int32_t vocab = 300) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t((seed = seed * 1664525u + 1013904223u) >> 8) % vocab;
  return t;
}

// Test-name suffix for parameters (family, sequence parallel, precision).
template <class Info>
std::string mode_name(const Info& info) {
  return std::string(std::get<0>(info.param) == ModelFamily::Gpt2 ? "Gpt2" : "Llama") +
         (std::get<1>(info.param) ? "SequenceParallel" : "") +
         (std::get<2>(info.param) == Precision::BF16 ? "Bf16" : "F32");
}

}  // namespace tensorpar::testing
