#include "tensorpar/parallel/sequence_parallel.hpp"

#include "tensorpar/comm/compressed_collectives.hpp"

namespace tensorpar {

SequenceParallelWorkspace::SequenceParallelWorkspace(int64_t max_tokens, int64_t max_width, Precision precision)
    : gathered({max_tokens, max_width}), partial({max_tokens, max_width}) {
  if (precision == Precision::BF16) gathered_bf16 = Bf16Operand(max_tokens, max_width);
}

int64_t tokens_per_rank(const ProcessGroup& tp, int64_t N) {
  TP_CHECK(N % tp.size() == 0, ConfigError,
           "sequence parallelism splits the {} tokens of a batch over {} ranks; choose batch x seq divisible by {}", N,
           tp.size(), tp.size());
  return N / tp.size();
}

void sequence_all_gather(ProcessGroup& tp, float* full, const float* shard, int64_t N, int64_t C) {
  const int64_t local = tokens_per_rank(tp, N) * C;
  all_gather_compressed(tp, std::span<float>(full, size_t(N * C)), std::span<const float>(shard, size_t(local)),
                        tp.comm_dtype());
}

void sequence_reduce_scatter(ProcessGroup& tp, float* shard, const float* full, int64_t N, int64_t C) {
  const int64_t local = tokens_per_rank(tp, N) * C;
  reduce_scatter_compressed(tp, std::span<float>(shard, size_t(local)), std::span<const float>(full, size_t(N * C)),
                            tp.comm_dtype());
}

}  // namespace tensorpar
