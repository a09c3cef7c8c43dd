// Parameter: one (possibly sharded) weight of a model, with its gradient, and the map from the
// rank's local slice to the tensor it is a slice of at TP=1 (the "global" tensor). The map drives
// TP-invariant initialisation, checkpoint loading/saving at any TP degree and the gradient norm.
#pragma once
#include <string>
#include <vector>

#include "tensorpar/core/tensor.hpp"

namespace tensorpar {

// Along the shard dimension, local indices [local_start, local_start + length) hold global indices
// [global_start, global_start + length). A block may be held by several ranks of the group
// (`replicas` > 1: a GQA key/value head shared by the ranks whose query heads use it); exactly one
// of them is its `primary` (writes it to checkpoints).
struct ShardBlock {
  int64_t local_start = 0, global_start = 0, length = 0;
  int replicas = 1;
  bool primary = true;
};

// What a layer allocates for a parameter. Training keeps a value and a gradient of the same shape;
// inference (generate, eval, serve) only the value, which a checkpoint then fills; a weight that the
// loader installs as a quantized copy (kernels/quantized_matmul.hpp) gets no f32 storage at all.
enum class ParameterAlloc {
  Training,   // value (initialised by the layer) and gradient
  Inference,  // value only, zero until loaded; the layer skips its random initialisation
  Deferred    // neither: only the shape and shard map (value stays empty until something installs it)
};

struct Parameter {
  std::string name;                // Hugging Face style, e.g. "h.0.attn.c_attn.weight"
  Shape global_shape;              // the whole tensor, as at TP=1 ([out, in] for linear weights)
  int shard_dim = -1;              // -1: every rank holds the whole tensor
  std::vector<ShardBlock> blocks;  // along shard_dim; empty when replicated
  int replicas = 1;                // how many ranks of the group hold each element (tp when replicated)
  bool weight_decay = false;       // AdamW decays 2-D weights only
  Tensor value;                    // local shape
  Tensor grad;                     // local shape, accumulated by backward, cleared by zero_grad

  bool replicated() const { return shard_dim < 0; }
  // This rank's shape, from the shard map: the value's shape, also when the value is not allocated
  // (ParameterAlloc::Deferred).
  Shape local_shape() const;
  // Global flat (row-major) index of local flat index i.
  int64_t global_index(int64_t local_flat) const;
  // Sum of squares of this rank's gradient, each element divided by the number of ranks holding it,
  // so that the sum over the group counts every element of the global gradient once.
  double grad_sum_of_squares_once() const;
};

// A parameter every rank of a group of `group_size` holds whole.
Parameter make_replicated(std::string name, Shape shape, int group_size, bool weight_decay,
                          ParameterAlloc alloc = ParameterAlloc::Training);
// A parameter whose dimension `dim` is the concatenation of `segments` (sizes at TP=1; one segment
// for a plain split, [q, k, v] for a fused projection), each segment split evenly over `parts`
// ranks; this rank (`part`) holds its slice of every segment, in segment order.
// `segment_parts` (empty: `parts` for every segment) splits segment s into segment_parts[s] pieces
// instead, where segment_parts[s] divides `parts`: each piece is then replicated on
// parts / segment_parts[s] consecutive ranks, rank `part` holding piece part / (parts / segment_parts[s])
// (GQA with fewer key/value heads than ranks).
Parameter make_sharded(std::string name, Shape global_shape, int dim, const std::vector<int64_t>& segments,
                       int part, int parts, bool weight_decay, const std::vector<int>& segment_parts = {},
                       ParameterAlloc alloc = ParameterAlloc::Training);
// The value/gradient storage `alloc` asks for, of the parameter's local shape.
void allocate_storage(Parameter& p, ParameterAlloc alloc);

// Initialisation keyed by (seed, name, global index): bit-identical at every TP degree, and a rank
// only ever generates the elements it holds.
void init_normal(Parameter& p, uint64_t seed, float std);
void init_constant(Parameter& p, float value);

}  // namespace tensorpar
