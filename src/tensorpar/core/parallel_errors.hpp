// Exceptions out of OpenMP regions. An exception may not leave a `#pragma omp parallel` region: the
// runtime calls std::terminate, and the user sees "terminate called after throwing ..." and a core
// dump instead of the one-line error. So a region whose body can throw (a failed check, an
// allocation, a GEMM library error) runs the body through ParallelErrors::run, which keeps the first
// exception and lets the other iterations go on; after the region, rethrow() throws it on the
// calling thread, where main's error path catches it:
//
//   ParallelErrors errors;
//   #pragma omp parallel for
//   for (int64_t i = 0; i < n; ++i) errors.run([&] { work(i); });
//   errors.rethrow();
//
// The remaining iterations still run (OpenMP has no portable early exit from a worksharing loop
// without cancellation enabled); they are cheap to skip with failed() where that matters.
#pragma once
#include <atomic>
#include <exception>
#include <mutex>
#include <utility>

namespace tensorpar {

class ParallelErrors {
 public:
  // Runs f(); if it throws, keeps the exception (the first one only) instead of letting it escape.
  template <class F>
  void run(const F& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  // Call after the region, on the thread that started it: throws the first exception kept, if any.
  void rethrow() {
    if (first_) std::rethrow_exception(std::exchange(first_, nullptr));
  }

 private:
  std::mutex mutex_;
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

}  // namespace tensorpar
