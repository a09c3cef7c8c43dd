// VocabParallelEmbedding: the token embedding table [padded_vocab, hidden] split by vocabulary rows.
// Rank i owns the contiguous rows [vocab_start, vocab_end); tokens outside contribute zero and the
// partial lookups are all-reduced (Megatron's g operator). The vocabulary is padded to a multiple of
// 128 × t so every rank's slice is equal; padding rows stay zero and are never a target.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/parallel/parameter.hpp"
#include "tensorpar/parallel/sequence_parallel.hpp"

namespace tensorpar {

// Megatron's rule: pad the vocabulary to a multiple of `multiple` × tp_size.
int64_t padded_vocab_size(int64_t vocab_size, int tp_size, int64_t multiple = 128);

struct VocabEmbeddingOptions {
  std::string name = "wte";
  int64_t vocab_size = 0;  // real vocabulary
  int64_t hidden = 0;
  uint64_t seed = 0;
  float init_std = 0.02f;
  // Sequence parallel when set: forward reduce-scatters to this rank's N/t tokens (out is
  // (N/t, hidden)) and backward gathers dout from them.
  SequenceParallelWorkspace* workspace = nullptr;
  // Training: table and gradient, random rows; Inference: the table only, zero until loaded;
  // Deferred: no f32 table (an untied LM head loaded as a quantized copy).
  ParameterAlloc alloc = ParameterAlloc::Training;
};

class VocabParallelEmbedding {
 public:
  VocabParallelEmbedding(ProcessGroup& tp, const VocabEmbeddingOptions& options);

  int64_t vocab_size() const { return options_.vocab_size; }
  int64_t padded_vocab() const { return padded_vocab_; }
  int64_t vocab_start() const { return vocab_start_; }
  int64_t vocab_end() const { return vocab_end_; }
  int64_t hidden() const { return options_.hidden; }

  // out (N, hidden) = whole embedding rows of tokens (N); one all-reduce.
  void forward(float* out, const int32_t* tokens, int64_t N);
  // weight.grad rows of this rank's tokens += dout (N, hidden); no communication (dout is whole everywhere).
  void backward(const float* dout, const int32_t* tokens, int64_t N);

  Parameter weight;  // local (padded_vocab / t, hidden)

 private:
  ProcessGroup& tp_;
  VocabEmbeddingOptions options_;
  int64_t padded_vocab_ = 0, vocab_start_ = 0, vocab_end_ = 0;
};

}  // namespace tensorpar
