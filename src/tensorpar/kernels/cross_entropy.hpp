// Softmax cross-entropy over a vocabulary, serial reference (the vocab-parallel loss lives in
// parallel/), and the per-row pieces that loss is built from. logits rows may be padded: only the
// first V of ld columns are real classes. Vectorised (exp_approx, ~2 ulp) and threaded over rows.
#pragma once
#include <cstdint>

#include "tensorpar/core/bf16.hpp"

namespace tensorpar {

// losses (N) = logsumexp(logits[n, :V]) - logits[n, target[n]]; returns the mean over the N rows.
// logits (N, ld), targets (N) each in [0, V) (otherwise ShapeError, before anything is written).
float cross_entropy_forward(float* losses, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V);
// dlogits (N, ld) OVERWRITTEN: (softmax(logits[n, :V]) - onehot(target[n])) * dloss in the first V
// columns and 0 in the padding columns V..ld-1. dlogits may alias logits. logits (N, ld), targets (N).
void cross_entropy_backward(float* dlogits, const float* logits, int64_t ld, const int32_t* targets, int64_t N,
                            int64_t V, float dloss);

// The row pieces of a softmax whose columns are split over ranks (parallel/vocab_parallel_cross_entropy):
// each rank reduces its own columns, the ranks combine the results between the calls.
// row_max (N) = max of logits[n, :V] (-inf when V == 0). logits (N, ld).
void softmax_row_max(float* row_max, const float* logits, int64_t ld, int64_t N, int64_t V);
// row_sumexp (N) = sum_j exp(logits[n, j] - row_max[n]) over j < V. logits (N, ld), row_max (N).
void softmax_row_sumexp(float* row_sumexp, const float* logits, int64_t ld, const float* row_max, int64_t N,
                        int64_t V);
// out (N, ld) = exp(logits - row_max[n]) * (scale / row_sumexp[n]) in the first V columns, 0 in the
// padding columns V..ld-1. out may alias logits. logits (N, ld), row_max (N), row_sumexp (N).
void softmax_scaled(float* out, const float* logits, int64_t ld, const float* row_max, const float* row_sumexp,
                    int64_t N, int64_t V, float scale);

// The same rounded to bf16 for a bf16 GEMM, with scale subtracted at column targets[n] - target_offset
// of row n when that is in [0, V) (the one-hot of a cross-entropy gradient), before rounding: bit for
// bit convert_f32_to_bf16 of softmax_scaled followed by that subtraction. out (N, ld) bf16.
void softmax_scaled_minus_target_bf16(bf16* out, const float* logits, int64_t ld, const float* row_max,
                                      const float* row_sumexp, const int32_t* targets, int64_t target_offset,
                                      int64_t N, int64_t V, float scale);

}  // namespace tensorpar
