// Streaming read bandwidth: sums a 1 GiB float array (far larger than any cache) with N OpenMP
// threads, best of several passes. The bound for batch-1 decoding, which reads every weight once per
// token. Build: g++ -O3 -march=native -fopenmp bench/membw.cpp -o membw; run: ./membw THREADS
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  omp_set_num_threads(threads);
  const size_t n = size_t(1) << 28;  // 1 GiB of floats
  std::vector<float> a(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) a[i] = float(i & 1023);  // first touch by the reading thread
  double best = 0, sink = 0;
  for (int pass = 0; pass < 6; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    float sum = 0;
    // 64 independent lanes per thread, so the adds are never the limit (one chained accumulator
    // would be add-latency bound at a few GB/s)
#pragma omp parallel reduction(+ : sum)
    {
      float acc[64] = {};
#pragma omp for schedule(static)
      for (size_t i = 0; i < n; i += 64)
#pragma omp simd
        for (int j = 0; j < 64; ++j) acc[j] += a[i + size_t(j)];
      for (float x : acc) sum += x;
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink += sum;
    if (pass > 0 && n * sizeof(float) / s > best) best = double(n * sizeof(float)) / s;
  }
  std::printf("%.2f\n", best / 1e9);  // GB/s
  return sink == 0.123 ? 1 : 0;
}
