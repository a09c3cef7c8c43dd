#include "tensorpar/comm/watchdog.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <mutex>

namespace tensorpar {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The collective in flight on this process. since_ns == 0: none. Written by the main thread, read
// by the watchdog; the names are string literals (static storage), so a stale pointer is still valid.
struct InFlight {
  std::atomic<bool> watched{false};
  std::atomic<const char*> what{nullptr};
  std::atomic<const char*> group{nullptr};
  std::atomic<int> group_size{0};
  std::atomic<int64_t> since_ns{0};
};
InFlight g_in_flight;

// Test hook (tests/cli): TENSORPAR_TEST_STALL_RANK=r makes world rank r stop answering, sleeping
// forever before its TENSORPAR_TEST_STALL_AFTER-th collective (default 20), as a hung or SIGSTOPped
// rank would. Read once; costs a branch afterwards.
struct StallHook {
  int countdown = -1;  // collectives left before stalling; -1: never
  StallHook() {
    const char* rank = std::getenv("TENSORPAR_TEST_STALL_RANK");
    if (!rank) return;
    int me = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (std::atoi(rank) != me) return;
    const char* after = std::getenv("TENSORPAR_TEST_STALL_AFTER");
    countdown = after ? std::atoi(after) : 20;
  }
  void maybe_stall() {
    if (countdown < 0) return;
    if (countdown-- > 0) return;
    for (;;) pause();
  }
};

}  // namespace

namespace detail {

InCollective::InCollective(const char* what, const ProcessGroup& group) {
  static StallHook stall;
  stall.maybe_stall();
  if (!g_in_flight.watched.load(std::memory_order_relaxed)) return;
  g_in_flight.what.store(what, std::memory_order_relaxed);
  g_in_flight.group.store(group.name(), std::memory_order_relaxed);
  g_in_flight.group_size.store(group.size(), std::memory_order_relaxed);
  g_in_flight.since_ns.store(now_ns(), std::memory_order_release);
  marked_ = true;
}

InCollective::~InCollective() {
  if (marked_) g_in_flight.since_ns.store(0, std::memory_order_relaxed);
}

}  // namespace detail

CommWatchdog::CommWatchdog(double timeout_seconds, std::function<void(const std::string&)> on_timeout)
    : timeout_(timeout_seconds), on_timeout_(std::move(on_timeout)) {
  TP_CHECK(std::isfinite(timeout_seconds) && timeout_seconds > 0, ConfigError,
           "--comm-timeout must be a positive number of seconds, got {}", timeout_seconds);
  g_in_flight.watched.store(true, std::memory_order_relaxed);
  thread_ = std::thread([this] { watch(); });
}

CommWatchdog::~CommWatchdog() {
  g_in_flight.watched.store(false, std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void CommWatchdog::watch() {
  // Check ten times per timeout (at most every second, at least every 10 ms): a stuck collective is
  // reported between 1.0 and 1.1 timeouts after it started.
  const auto period = std::chrono::duration<double>(std::clamp(timeout_ / 10, 0.01, 1.0));
  const int64_t timeout_ns = int64_t(timeout_ * 1e9);
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, period, [this] { return stop_; })) return;
    }
    const int64_t since = g_in_flight.since_ns.load(std::memory_order_acquire);
    if (since == 0) continue;
    const int64_t waited = now_ns() - since;
    if (waited < timeout_ns) continue;
    const char* what = g_in_flight.what.load(std::memory_order_relaxed);
    const char* group = g_in_flight.group.load(std::memory_order_relaxed);
    const int size = g_in_flight.group_size.load(std::memory_order_relaxed);
    if (g_in_flight.since_ns.load(std::memory_order_acquire) != since) continue;  // it completed meanwhile
    on_timeout_(fmt::format(
        "{} on the {} group ({} rank{}) did not complete within {:.0f} s (waited {:.1f} s): another rank of the "
        "group stopped answering (hung, stopped, or died); check the other ranks' output and their nodes, or "
        "raise --comm-timeout",
        what, group, size, size == 1 ? "" : "s", timeout_, double(waited) / 1e9));
    return;
  }
}

}  // namespace tensorpar
