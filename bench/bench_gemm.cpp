// Single-thread GEMM throughput on the shapes of one training step of the benchmark model
// (2048 tokens, hidden 768, TP=2 shards): our gemm (oneDNN sgemm), OpenBLAS cblas_sgemm and
// gemm_bf16 (oneDNN bf16 matmul). Every result is also given as a percentage of this core's peak,
// measured by measure_peak_flops() at start in the same process, because absolute GFLOP/s vary a
// lot between machines of this kind (and with the load other processes put on them).
//
// OpenBLAS 0.3.21 detects Zen 5 as Haswell (AVX2 kernels) unless OPENBLAS_CORETYPE=SkylakeX is in
// the environment *before the library loads*: setenv() inside main is too late, since the dynamic
// loader runs OpenBLAS's constructor first. bench/run_gemm.sh runs both ways.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/kernels/peak_flops.hpp"

namespace {

using tensorpar::bf16;
using tensorpar::Trans;

struct Shape {
  const char* name;  // which matmul of the step
  Trans ta, tb;
  int64_t M, N, K;
  float beta;  // backward accumulates into gradients: beta = 1
};

// Forward C = X W^T (NT, W stored [out, in]); backward dX = dY W (NN) and dW += dY^T X (TN).
// Per-rank sizes at TP=2: qkv out 3*768/2 = 1152, fc1 out 4*768/2 = 1536, fc2 in 1536,
// attention projection in 768/2 = 384.
const Shape kShapes[] = {
    {"fwd_qkv", Trans::No, Trans::Yes, 2048, 1152, 768, 0.0f},
    {"fwd_attnproj", Trans::No, Trans::Yes, 2048, 768, 384, 0.0f},
    {"fwd_fc1", Trans::No, Trans::Yes, 2048, 1536, 768, 0.0f},
    {"fwd_fc2", Trans::No, Trans::Yes, 2048, 768, 1536, 0.0f},
    {"bwd_dx_qkv", Trans::No, Trans::No, 2048, 768, 1152, 0.0f},
    {"bwd_dx_attnproj", Trans::No, Trans::No, 2048, 384, 768, 0.0f},
    {"bwd_dx_fc1", Trans::No, Trans::No, 2048, 768, 1536, 0.0f},
    {"bwd_dx_fc2", Trans::No, Trans::No, 2048, 1536, 768, 0.0f},
    {"bwd_dw_qkv", Trans::Yes, Trans::No, 1152, 768, 2048, 1.0f},
    {"bwd_dw_attnproj", Trans::Yes, Trans::No, 768, 384, 2048, 1.0f},
    {"bwd_dw_fc1", Trans::Yes, Trans::No, 1536, 768, 2048, 1.0f},
    {"bwd_dw_fc2", Trans::Yes, Trans::No, 768, 1536, 2048, 1.0f},
    {"attn_qk", Trans::No, Trans::Yes, 256, 256, 64, 0.0f},  // one head: Q [T,hd] K^T, T=256, hd=64
};

tensorpar::PeakFlops g_peak;

enum class Lib { OneDnnF32, OpenBlasF32, OneDnnBf16 };
const char* lib_name(Lib l) {
  switch (l) {
    case Lib::OneDnnF32: return "onednn_f32";
    case Lib::OpenBlasF32: return "openblas_f32";
    case Lib::OneDnnBf16: return "onednn_bf16";
  }
  return "?";
}

std::vector<float> filled(size_t n, float scale) {
  std::vector<float> v(n);
  uint32_t s = 12345;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * (float(s >> 8) / float(1 << 24) - 0.5f);
  }
  return v;
}

void run(benchmark::State& state, Lib lib, Shape sh) {
  // Dense row-major storage: A is [M,K] or [K,M], B is [K,N] or [N,K], C is [M,N].
  const int64_t lda = sh.ta == Trans::Yes ? sh.M : sh.K, ldb = sh.tb == Trans::Yes ? sh.K : sh.N, ldc = sh.N;
  const auto A = filled(size_t(sh.M * sh.K), 1.0f), B = filled(size_t(sh.K * sh.N), 1.0f);
  auto C = filled(size_t(sh.M * sh.N), 0.01f);
  std::vector<bf16> A16(A.size()), B16(B.size());
  tensorpar::convert_f32_to_bf16(A16.data(), A.data(), int64_t(A.size()));
  tensorpar::convert_f32_to_bf16(B16.data(), B.data(), int64_t(B.size()));
  // beta = 1 adds a bounded product each time: C grows linearly, far from overflow in a benchmark.
  const float beta = sh.beta;

  auto call = [&] {
    switch (lib) {
      case Lib::OneDnnF32:
        tensorpar::gemm(sh.ta, sh.tb, sh.M, sh.N, sh.K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
        break;
      case Lib::OpenBlasF32:
        cblas_sgemm(CblasRowMajor, sh.ta == Trans::Yes ? CblasTrans : CblasNoTrans,
                    sh.tb == Trans::Yes ? CblasTrans : CblasNoTrans, blasint(sh.M), blasint(sh.N), blasint(sh.K),
                    1.0f, A.data(), blasint(lda), B.data(), blasint(ldb), beta, C.data(), blasint(ldc));
        break;
      case Lib::OneDnnBf16:
        tensorpar::gemm_bf16(sh.ta, sh.tb, sh.M, sh.N, sh.K, 1.0f, A16.data(), lda, B16.data(), ldb, beta, C.data(),
                             ldc);
        break;
    }
  };
  call();  // warm-up: creates the cached primitive, faults the pages in
  double total = 0, best = 1e30;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(dt);
    total += dt;
    best = std::min(best, dt);
    benchmark::DoNotOptimize(C.data());
  }
  const double flops = 2.0 * double(sh.M) * double(sh.N) * double(sh.K);
  const double peak = lib == Lib::OneDnnBf16 ? g_peak.bf16_per_core : g_peak.f32_per_core;
  const double gflops = flops * double(state.iterations()) / total * 1e-9, best_gflops = flops / best * 1e-9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["%peak"] = peak > 0 ? 100.0 * gflops / peak : 0.0;
  state.counters["%peak_best"] = peak > 0 ? 100.0 * best_gflops / peak : 0.0;
  if (lib == Lib::OneDnnBf16)
    state.SetLabel(tensorpar::gemm_bf16_impl_name(sh.ta, sh.tb, sh.M, sh.N, sh.K, lda, ldb, ldc, 1.0f, beta));
}

}  // namespace

int main(int argc, char** argv) {
  // One thread everywhere: the per-core peak is the reference, and TP ranks each own one core.
  tensorpar::set_num_threads(1);
  openblas_set_num_threads(1);
  g_peak = tensorpar::measure_peak_flops();
  benchmark::AddCustomContext("peak_f32_gflops_per_core", fmt::format("{:.1f}", g_peak.f32_per_core));
  benchmark::AddCustomContext("peak_bf16_gflops_per_core", fmt::format("{:.1f}", g_peak.bf16_per_core));
  benchmark::AddCustomContext("openblas_corename", openblas_get_corename());
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype ? coretype : "(unset)");

  for (Lib lib : {Lib::OneDnnF32, Lib::OpenBlasF32, Lib::OneDnnBf16})
    for (const Shape& sh : kShapes) {
      const std::string name = fmt::format("gemm/{}/{}/{}{}/{}x{}x{}", lib_name(lib), sh.name,
                                           sh.ta == Trans::Yes ? 'T' : 'N', sh.tb == Trans::Yes ? 'T' : 'N', sh.M,
                                           sh.N, sh.K);
      benchmark::RegisterBenchmark(name.c_str(), run, lib, sh)->UseManualTime()->Unit(benchmark::kMillisecond);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
