// Peak floating-point throughput of one core, measured by this process's calling thread: the
// denominator of every "% of peak" the benchmarks print. Absolute GFLOP/s differ a lot between
// (virtual) machines of the same kind, so results are reported as ratios against a peak measured in
// the same run rather than against a datasheet number.
#pragma once

namespace tensorpar {

// GFLOP/s of one thread running independent AVX-512 FMA chains (2 flops per lane per FMA).
// Falls back to AVX2 FMA when AVX-512F is absent at run time. Runs for about `seconds` and returns
// the best rate of short chunks, so a brief preemption by another process lowers nothing.
double measure_peak_gflops_f32(double seconds = 0.25);

// GFLOP/s of one thread running independent vdpbf16ps chains (64 flops per 512-bit instruction:
// 16 lanes x 2 bf16 pairs x multiply+add). Returns 0 when AVX512-BF16 is absent at run time.
double measure_peak_gflops_bf16(double seconds = 0.25);

struct PeakFlops {
  double f32_per_core = 0;   // GFLOP/s
  double bf16_per_core = 0;  // GFLOP/s, 0 if the CPU has no AVX512-BF16
};
PeakFlops measure_peak_flops();

}  // namespace tensorpar
