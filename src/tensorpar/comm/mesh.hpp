// Mesh: the world split into tensor-parallel groups of contiguous ranks (they share a node and the
// fastest links), pipeline stages across them, and data-parallel replicas outermost:
//   world rank = (dp_rank * pp_size + pp_rank) * tp_size + tp_rank.
// The groups are named "tp", "pp", "dp" and "embedding" in error messages.
#pragma once
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

class Mesh {
 public:
  // Collective over `world`. Throws ConfigError on every rank if tp_size x pp_size does not divide the world.
  Mesh(const ProcessGroup& world, int tp_size, int pp_size = 1);
  ProcessGroup& tp() { return tp_; }
  ProcessGroup& dp() { return dp_; }
  // The P ranks holding the same tensor slice of every stage of one replica, ordered by stage.
  ProcessGroup& pp() { return pp_; }
  // Tied embeddings (Megatron's "embedding group"): the first and the last stage of one pipeline at the
  // same tensor rank, which hold the same embedding table and sum its gradient. A rank of a middle
  // stage (or any rank when P = 1) is in a group of itself alone.
  ProcessGroup& embedding() { return embedding_; }
  // Every stage of one replica (tp x pp ranks, ordered by world rank): one model's owners, e.g. to
  // write it into one file.
  ProcessGroup& model_parallel() { return model_parallel_; }
  int tp_size() const { return tp_.size(); }
  int dp_size() const { return dp_.size(); }
  int pp_size() const { return pp_.size(); }

 private:
  ProcessGroup tp_;
  ProcessGroup dp_;
  ProcessGroup pp_;
  ProcessGroup embedding_;
  ProcessGroup model_parallel_;
};

}  // namespace tensorpar
