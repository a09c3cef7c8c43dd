#include <gtest/gtest.h>
#include <omp.h>

#include <thread>
#include <vector>

#include "tensorpar/core/profile.hpp"

namespace tensorpar {

namespace {
struct ProfilingOn {
  ProfilingOn() {
    reset_profile();
    set_profiling(true);
  }
  ~ProfilingOn() {
    set_profiling(false);
    reset_profile();
  }
};
}  // namespace

// Phases recorded at once from many threads, new phases among them (map insertions) and the same
// phase from all (the same entry updated): every call is counted. Unsynchronised, the map is corrupted
// or increments are lost (without the mutex this failed 3 runs out of 3, counts short by thousands).
TEST(Profile, CountsEveryCallFromManyStdThreads) {
  ProfilingOn on;
  constexpr int kThreads = 8, kCalls = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t] {
      const std::string own = "own phase " + std::to_string(t);
      for (int i = 0; i < kCalls; ++i) {
        add_to_profile("shared phase", 1e-6);
        add_to_profile(own.c_str(), 1e-6);
        TP_PROFILE_SCOPE("scoped phase");
      }
    });
  for (auto& th : threads) th.join();
  const auto table = profile();
  ASSERT_EQ(table.size(), size_t(kThreads + 2));
  EXPECT_EQ(table.at("shared phase").calls, int64_t(kThreads) * kCalls);
  EXPECT_EQ(table.at("scoped phase").calls, int64_t(kThreads) * kCalls);
  EXPECT_NEAR(table.at("shared phase").seconds, kThreads * kCalls * 1e-6, 1e-9 * kThreads * kCalls);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(table.at("own phase " + std::to_string(t)).calls, kCalls);
}

// The way the kernels do it: a scope inside an OpenMP region, recorded by every thread of the team.
TEST(Profile, CountsEveryCallFromAnOpenMpRegion) {
  ProfilingOn on;
  constexpr int kIterations = 400000;
#pragma omp parallel for num_threads(4) schedule(dynamic, 64)
  for (int i = 0; i < kIterations; ++i) {
    TP_PROFILE_SCOPE("gemm inside a region");
  }
  EXPECT_EQ(profile().at("gemm inside a region").calls, kIterations);
}

}  // namespace tensorpar
