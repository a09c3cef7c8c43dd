// Softmax cross-entropy over a vocabulary, serial reference (the vocab-parallel loss lives in
// parallel/). logits rows may be padded: only the first V of ld columns are real classes.
#pragma once
#include <cstdint>

namespace tensorpar {

// losses (N) = logsumexp(logits[n, :V]) - logits[n, target[n]]; returns the mean over the N rows.
// logits (N, ld), targets (N) each in [0, V) (otherwise ShapeError, before anything is written).
float cross_entropy_forward(float* losses, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V);
// dlogits (N, ld) OVERWRITTEN: (softmax(logits[n, :V]) - onehot(target[n])) * dloss in the first V
// columns and 0 in the padding columns V..ld-1. dlogits may alias logits. logits (N, ld), targets (N).
void cross_entropy_backward(float* dlogits, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V, float dloss);

}  // namespace tensorpar
