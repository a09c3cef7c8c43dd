// Decode GEMV, M = 1: our gemv_f32 (AVX-512, or AVX2 + FMA) (kernels/gemv.hpp) against oneDNN's sgemm on the
// matrices of one decode step of the 156M-parameter Llama of docs/inference.md (8 layers, hidden
// 1024, 16 heads, 4 KV heads, FFN 2816, vocab 32000), split as one rank of TP=t holds them.
// Every layer has its own weights (492 MB at t=1, far beyond the caches), so each "token" streams
// them from memory as decode does. The two methods alternate token by token (ours, oneDNN, ours...)
// so both see the same machine load; medians are printed.
// Usage: bench_gemv [tp=1] [tokens=30] [M=1]   (M: rows of x, batched decode; threads: OMP_NUM_THREADS)
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "tensorpar/kernels/gemv.hpp"

namespace {

struct Matrix {
  int64_t rows, cols;
  std::vector<float> w;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int tp = argc > 1 ? std::atoi(argv[1]) : 1;
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 30;
  const int64_t M = argc > 3 ? std::atoi(argv[3]) : 1;
  const int64_t C = 1024, hd = 64, H = 16, KV = 4, F = 2816, V = 32000, L = 8;
  std::vector<Matrix> mats;
  for (int64_t l = 0; l < L; ++l) {
    mats.push_back({(H + 2 * KV) * hd / tp, C, {}});  // qkv (column-parallel)
    mats.push_back({C, H * hd / tp, {}});             // attention output (row-parallel)
    mats.push_back({2 * F / tp, C, {}});              // gate|up
    mats.push_back({C, F / tp, {}});                  // down
  }
  mats.push_back({V / tp, C, {}});  // LM head
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  double bytes = 0;
  int64_t max_in = 0, max_out = 0;
  for (Matrix& m : mats) {
    m.w.resize(size_t(m.rows * m.cols));
    for (float& v : m.w) v = normal(rng);
    bytes += double(m.w.size()) * 4;
    max_in = std::max(max_in, m.cols);
    max_out = std::max(max_out, m.rows);
  }
  std::vector<float> x(static_cast<size_t>(M * max_in)), y(static_cast<size_t>(M * max_out)),
      y_ref(static_cast<size_t>(M * max_out));
  for (float& v : x) v = normal(rng);

  auto ours = [&] {
    for (const Matrix& m : mats) tensorpar::gemv_f32(y.data(), m.rows, x.data(), m.cols, m.w.data(), m.cols, M, m.rows, m.cols);
  };
  auto onednn = [&] {
    for (const Matrix& m : mats)
      dnnl_sgemm('N', 'T', M, m.rows, m.cols, 1.0f, x.data(), m.cols, m.w.data(), m.cols, 0.0f, y_ref.data(), m.rows);
  };
  auto seconds = [](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  ours();
  onednn();
  // agreement on the last matrix (the LM head): relative to the largest |y|
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < mats.back().rows; ++i) {
    diff = std::max(diff, double(std::abs(y[size_t(i)] - y_ref[size_t(i)])));
    scale = std::max(scale, double(std::abs(y_ref[size_t(i)])));
  }
  std::vector<double> t_ours, t_onednn;
  for (int i = 0; i < tokens; ++i) {
    t_ours.push_back(seconds(ours));
    t_onednn.push_back(seconds(onednn));
  }
  const double a = median(t_ours), b = median(t_onednn);
  std::printf("M=%lld, TP=%d one rank: %.1f MB of weights per token; max|diff|/max|y| %.1e\n", (long long)M, tp, bytes / 1e6, diff / scale);
  std::printf("gemv_f32 (%s): %.2f ms/token, %.1f GB/s\n", tensorpar::gemv_has_avx512() ? "AVX-512" : "AVX2",
              a * 1e3, bytes / a / 1e9);
  std::printf("oneDNN sgemm:       %.2f ms/token, %.1f GB/s\n", b * 1e3, bytes / b / 1e9);
  std::printf("speed-up: %.2fx (medians of %d interleaved tokens each)\n", b / a, tokens);
  return 0;
}
