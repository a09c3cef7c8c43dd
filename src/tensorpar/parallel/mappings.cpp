#include "tensorpar/parallel/mappings.hpp"

#include <cstring>

namespace tensorpar {

void gather_from_tp_forward(ProcessGroup& tp, float* out, const float* in, int64_t N, int64_t C, float* scratch) {
  const int t = tp.size();
  if (t == 1) {
    if (out != in) std::memcpy(out, in, size_t(N * C) * sizeof(float));
    return;
  }
  // all_gather gives rank-major blocks [t][N][C]; interleave them into rows [N][t*C]
  all_gather_compressed(tp, std::span<float>(scratch, size_t(t * N * C)), std::span<const float>(in, size_t(N * C)),
                        tp.comm_dtype());
  for (int r = 0; r < t; ++r)
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(out + n * C * t + r * C, scratch + (int64_t(r) * N + n) * C, size_t(C) * sizeof(float));
}

}  // namespace tensorpar
