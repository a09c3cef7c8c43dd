#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <string>

#include "tensorpar/core/error.hpp"
#include "tensorpar/core/parallel_errors.hpp"

namespace tensorpar {

// An exception thrown by one iteration of an OpenMP loop on a worker thread reaches the caller after
// the region (without the helper the runtime calls std::terminate and this test dies).
TEST(ParallelErrors, ExceptionThrownInsideARegionIsCaughtAfterIt) {
  std::atomic<int> ran{0};
  std::atomic<int> threw_on_thread{-1};
  auto region = [&] {
    ParallelErrors errors;
#pragma omp parallel for num_threads(4) schedule(static, 1)
    for (int i = 0; i < 64; ++i)
      errors.run([&] {
        ran.fetch_add(1);
        if (i == 37) {  // iteration 37 of a static,1 schedule runs on thread 1 of 4: not the caller
          threw_on_thread.store(omp_get_thread_num());
          throw ShapeError("iteration 37 failed");
        }
      });
    errors.rethrow();
  };
  try {
    region();
    FAIL() << "the exception thrown inside the region was lost";
  } catch (const ShapeError& e) {
    EXPECT_EQ(std::string(e.what()), "iteration 37 failed");
  }
  EXPECT_EQ(ran.load(), 64);  // the other iterations still ran
  EXPECT_EQ(threw_on_thread.load(), 1);  // thrown on a worker, caught on the caller
}

// Several iterations throw: exactly one exception (one of theirs) comes out, the rest are dropped.
TEST(ParallelErrors, KeepsOneOfManyAndNothingWhenNoneThrows) {
  ParallelErrors errors;
#pragma omp parallel for num_threads(4)
  for (int i = 0; i < 100; ++i)
    errors.run([&] {
      if (i % 3 == 0) throw IoError("failure " + std::to_string(i));
    });
  EXPECT_TRUE(errors.failed());
  EXPECT_THROW(errors.rethrow(), IoError);
  EXPECT_NO_THROW(errors.rethrow());  // rethrown once, then cleared

  ParallelErrors clean;
#pragma omp parallel for num_threads(4)
  for (int i = 0; i < 100; ++i) clean.run([] {});
  EXPECT_FALSE(clean.failed());
  EXPECT_NO_THROW(clean.rethrow());
}

}  // namespace tensorpar
