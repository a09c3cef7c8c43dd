// Mesh: the world split into tensor-parallel groups of contiguous ranks (they share a node and the
// fastest links) and data-parallel groups across them: world rank = dp_rank * tp_size + tp_rank.
// The groups are named "tp" and "dp" in error messages.
#pragma once
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

class Mesh {
 public:
  // Collective over `world`. Throws ConfigError on every rank if tp_size does not divide the world.
  Mesh(const ProcessGroup& world, int tp_size);
  ProcessGroup& tp() { return tp_; }
  ProcessGroup& dp() { return dp_; }
  int tp_size() const { return tp_.size(); }
  int dp_size() const { return dp_.size(); }

 private:
  ProcessGroup tp_;
  ProcessGroup dp_;
};

}  // namespace tensorpar
