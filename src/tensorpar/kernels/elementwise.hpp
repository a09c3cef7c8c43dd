// Element-wise helpers shared by the layers and the optimiser: bias add and its backward, in-place
// add/scale, and the sum of squares used for gradient-norm clipping.
#pragma once
#include <cstdint>

namespace tensorpar {

// out (N,C) += bias (C), broadcast over the N rows.
void add_bias(float* out, const float* bias, int64_t N, int64_t C);
// dbias (C) += column sums of dout (N,C). Accumulates.
void bias_backward(float* dbias, const float* dout, int64_t N, int64_t C);
// y (n) += x (n).
void add_inplace(float* y, const float* x, int64_t n);
// y (n) *= s.
void scale_inplace(float* y, float s, int64_t n);
// sum of x[i]^2 over x (n), accumulated in double (gradient norms over millions of values).
double sum_of_squares(const float* x, int64_t n);

}  // namespace tensorpar
