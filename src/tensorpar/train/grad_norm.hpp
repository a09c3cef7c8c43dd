// The global gradient norm under tensor parallelism: every element of the (TP=1) model counted
// once. Sharded parameters contribute their local squares, which are summed over the group;
// replicated ones are held by `replicas` ranks with identical gradients, so each rank adds
// 1/replicas of its squares (per shard block for GQA key/value heads replicated on several ranks).
// One all-reduce of one double.
#pragma once
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/parallel/parameter.hpp"

namespace tensorpar {

double global_grad_norm(ProcessGroup& tp, const std::vector<Parameter*>& parameters);

// torch.nn.utils.clip_grad_norm_ semantics: scale every gradient by max_norm / (norm + 1e-6) when
// that is below 1. Returns the norm before clipping. max_norm <= 0 only measures.
double clip_grad_norm(ProcessGroup& tp, const std::vector<Parameter*>& parameters, double max_norm);

// Pipeline parallelism: the norm over every stage of `pp` (one more all-reduce of one double), each
// stage passing its own parameters. `counted_elsewhere` (may be null) is scaled but not counted: the
// last stage's copy of a tied embedding, whose gradient equals the first stage's after their sum.
double clip_grad_norm(ProcessGroup& tp, ProcessGroup& pp, const std::vector<Parameter*>& parameters,
                      const Parameter* counted_elsewhere, double max_norm);

}  // namespace tensorpar
