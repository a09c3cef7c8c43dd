// peak_flops: all a test can say about speed is that the loops ran and that bf16 dot products are
// not slower than f32 FMAs where the CPU has them (vdpbf16ps does twice the flops per instruction).
#include <gtest/gtest.h>

#include "tensorpar/kernels/peak_flops.hpp"

namespace tensorpar {
namespace {

TEST(PeakFlops, PositiveAndBf16AtLeastF32) {
  const PeakFlops p = measure_peak_flops();
  EXPECT_GT(p.f32_per_core, 0.0);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) {
    EXPECT_GT(p.bf16_per_core, 0.0);
    EXPECT_GE(p.bf16_per_core, p.f32_per_core) << "bf16 " << p.bf16_per_core << " vs f32 " << p.f32_per_core;
  } else {
    EXPECT_EQ(p.bf16_per_core, 0.0);
  }
}

TEST(PeakFlops, ShortRunsReturnQuickly) {
  EXPECT_GT(measure_peak_gflops_f32(0.01), 0.0);
  EXPECT_GE(measure_peak_gflops_bf16(0.01), 0.0);
}

}  // namespace
}  // namespace tensorpar
