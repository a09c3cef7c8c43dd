// Per-thread scratch buffers for kernels that need temporary space: they grow to the largest size
// asked for and are then reused, so a kernel call never allocates in steady state.
// Internal to kernels/: not part of the public API.
#pragma once
#include <cstddef>
#include <vector>

namespace tensorpar::detail {

// A buffer of at least n floats owned by the calling thread. Distinct slots are distinct buffers,
// so one kernel can hold several at once. Contents are unspecified.
inline float* scratch_floats(size_t n, int slot = 0) {
  constexpr int kSlots = 4;
  thread_local std::vector<float> buffers[kSlots];
  std::vector<float>& b = buffers[slot % kSlots];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace tensorpar::detail
