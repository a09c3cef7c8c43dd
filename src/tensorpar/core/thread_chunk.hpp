// Splitting element-wise loops over OpenMP threads: when it pays, and each thread's share.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace tensorpar {

// Element-wise kernels fork threads from this many elements on: below it, an OpenMP fork costs more
// than the loop it splits.
inline constexpr int64_t kParallelMinElements = int64_t(1) << 16;

// This thread's share of a loop of n items inside an OpenMP parallel region: contiguous ranges in
// whole multiples of `align` items (a vector width), so a vectorised kernel runs on each range as it
// would on the whole. Outside a region (or with one thread) the range is [0, n).
// A named struct, not a pair: clang 14 cannot capture structured bindings into a nested
// `#pragma omp simd` region, so callers read .begin/.end.
struct ThreadRange {
  int64_t begin, end;
};
inline ThreadRange thread_chunk(int64_t n, int64_t align = 1) {
  const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
  const int64_t units = (n + align - 1) / align;  // whole vectors; the last may be partial
  const int64_t per = units / threads, extra = units % threads;
  const int64_t first = id * per + std::min(id, extra), count = per + (id < extra ? 1 : 0);
  return {std::min(n, first * align), std::min(n, (first + count) * align)};
}

}  // namespace tensorpar
