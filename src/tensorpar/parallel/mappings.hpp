// Megatron's conjugate communication operators, as explicit forward/backward pairs.
//   f = copy_to_tp:     forward identity,       backward all-reduce
//   g = reduce_from_tp: forward all-reduce,     backward identity
//   gather_from_tp:     forward all-gather along the last dim, backward keep own slice
//   scatter_to_tp:      forward keep own slice, backward all-gather along the last dim
// The identity halves need no call; they are listed so every layer reads as the paper's diagram.
// These carry activations and activation gradients, so they use the group's wire format
// (tp.comm_dtype(), --tp-comm-dtype): f32, or bf16/int8 compressed and summed in f32.
#pragma once
#include <span>

#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

// f backward: sum the partial input gradients of the group, in place. Returns a Work: the caller
// computes the weight gradient meanwhile and waits (ProcessGroup::async_mode decides how it runs).
// A compressed all-reduce runs at once (it is two collectives with work between them) and returns
// an empty Work.
inline Work copy_to_tp_backward_async(ProcessGroup& tp, std::span<float> grad) {
  if (tp.comm_dtype() == CommDtype::F32) return tp.all_reduce_async(grad);
  all_reduce_compressed(tp, grad, tp.comm_dtype());
  return {};
}
// g forward: sum the partial outputs of the group, in place.
inline void reduce_from_tp_forward(ProcessGroup& tp, std::span<float> x) {
  all_reduce_compressed(tp, x, tp.comm_dtype());
}

// gather_from_tp forward: out (N, C*t) = concat over ranks along the last dim of in (N, C).
// scratch holds N*C*t floats (allocated once by the caller).
void gather_from_tp_forward(ProcessGroup& tp, float* out, const float* in, int64_t N, int64_t C, float* scratch);
// gather_from_tp backward (= scatter_to_tp forward) keeps this rank's column slice of dout (N, C*t):
// layers read it in place as a strided view (row stride C*t, offset rank*C), with no copy.

}  // namespace tensorpar
