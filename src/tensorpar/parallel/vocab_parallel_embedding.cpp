#include "tensorpar/parallel/vocab_parallel_embedding.hpp"

#include <cstring>

#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/parallel/mappings.hpp"

namespace tensorpar {

int64_t padded_vocab_size(int64_t vocab_size, int tp_size, int64_t multiple) {
  const int64_t m = multiple * tp_size;
  return (vocab_size + m - 1) / m * m;
}

VocabParallelEmbedding::VocabParallelEmbedding(ProcessGroup& tp, const VocabEmbeddingOptions& options)
    : tp_(tp), options_(options), padded_vocab_(padded_vocab_size(options.vocab_size, tp.size())) {
  TP_CHECK(options.vocab_size > 0 && options.hidden > 0, ConfigError,
           "embedding {} needs a positive vocabulary and hidden size (got {} and {})", options.name,
           options.vocab_size, options.hidden);
  weight = make_sharded(options_.name + ".weight", {padded_vocab_, options_.hidden}, 0, {padded_vocab_}, tp.rank(),
                        tp.size(), /*weight_decay=*/true, {}, options_.alloc);
  vocab_start_ = weight.blocks[0].global_start;
  vocab_end_ = vocab_start_ + weight.blocks[0].length;
  if (options_.alloc != ParameterAlloc::Training) return;  // the loader fills the rows (padding: zero)
  init_normal(weight, options_.seed, options_.init_std);
  // padding rows are zero: they are never looked up and never a target
  for (int64_t row = std::max(vocab_start_, options_.vocab_size); row < vocab_end_; ++row)
    std::memset(weight.value.f32() + (row - vocab_start_) * options_.hidden, 0, size_t(options_.hidden) * sizeof(float));
}

void VocabParallelEmbedding::forward(float* out, const int32_t* tokens, int64_t N) {
  const int64_t C = options_.hidden;
  const float* w = weight.value.f32();
  float* const shard_out = out;
  const bool sequence_parallel = options_.workspace && tp_.size() > 1;
  if (sequence_parallel) out = options_.workspace->partial.f32();
  for (int64_t n = 0; n < N; ++n) {
    const int64_t tok = tokens[n];
    TP_CHECK(tok >= 0 && tok < options_.vocab_size, ShapeError,
             "token id {} at position {} is outside the vocabulary [0, {}); the data does not match the model", tok,
             n, options_.vocab_size);
    float* row = out + n * C;
    if (tok >= vocab_start_ && tok < vocab_end_)
      std::memcpy(row, w + (tok - vocab_start_) * C, size_t(C) * sizeof(float));
    else
      std::memset(row, 0, size_t(C) * sizeof(float));
  }
  if (sequence_parallel)
    sequence_reduce_scatter(tp_, shard_out, out, N, C);
  else
    reduce_from_tp_forward(tp_, std::span<float>(out, size_t(N * C)));
}

void VocabParallelEmbedding::backward(const float* dout, const int32_t* tokens, int64_t N) {
  const int64_t C = options_.hidden;
  if (options_.workspace && tp_.size() > 1) {  // every token's gradient, from the ranks holding them
    float* full = options_.workspace->gathered.f32();
    sequence_all_gather(tp_, full, dout, N, C);
    dout = full;
  }
  float* g = weight.grad.f32();
  for (int64_t n = 0; n < N; ++n) {
    const int64_t tok = tokens[n];
    if (tok >= vocab_start_ && tok < vocab_end_) add_inplace(g + (tok - vocab_start_) * C, dout + n * C, C);
  }
}

}  // namespace tensorpar
