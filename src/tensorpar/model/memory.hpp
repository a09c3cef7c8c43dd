// Memory per rank, as formulas (docs/memory.md): the activation bytes a TransformerLM keeps per
// layer, ours derived from the buffers each layer keeps for its backward, and Korthikanti et al.'s
// (2022) for the same parallelism and recomputation, scaled to our f32 activations; and the
// parameter + gradient + AdamW state bytes. The model measures what it holds
// (TransformerLM::activation_bytes_per_layer); these say what it should hold.
#pragma once
#include <cstdint>
#include <vector>

#include "tensorpar/model/config.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar {

// The shape that decides the memory of one step: batch b, sequence s, TP degree t, and how.
struct MemoryShape {
  ModelConfig model;
  int64_t batch = 0, seq = 0;
  int tp = 1;
  TransformerOptions options;
};

// Our formula: bytes per layer per rank, the shared buffers of recomputation spread over the layers.
double activation_bytes_per_layer_formula(const MemoryShape& m);
// Korthikanti et al.'s per-layer formula for the same mode, with activations of `element_bytes`
// (2 in the paper, 4 for ours) and 1-byte dropout masks: no parallelism sbh(34 + 5as/h) at 2 bytes,
// TP sbh(10 + 24/t + 5as/(ht)), TP+SP sbh(34/t + 5as/(ht)); selective recomputation drops the
// as/h term, full keeps the block input, 2sbh (2sbh/t with SP).
double korthikanti_activation_bytes_per_layer(const MemoryShape& m, double element_bytes = 4);

// f32 values + gradients + AdamW m and v: 16 bytes per element this rank holds.
int64_t parameter_bytes_per_rank(const std::vector<Parameter*>& parameters);
// What that should be: 16 bytes per element of the replicated parameters, plus 1/t of the sharded ones
// (their global size, padding included).
double parameter_bytes_expected(const std::vector<Parameter*>& parameters, int tp);

}  // namespace tensorpar
