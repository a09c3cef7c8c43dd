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

// The collective in flight on this process, written by the main thread (the only one calling MPI) and
// read by the watchdog. `active` is the serial number of the blocking call in progress, 0 between
// calls: the main thread never reads a clock (that costs 20-200 ns depending on the clock source);
// the watchdog times how long it keeps seeing the same serial number. The names are string literals
// (static storage), so a stale pointer is still valid.
struct InFlight {
  std::atomic<const char*> what{nullptr};
  std::atomic<const char*> group{nullptr};
  std::atomic<int> group_size{0};
  std::atomic<uint64_t> active{0};
  uint64_t serial = 0;  // main thread only
};
InFlight g_in_flight;

// Test hook (tests/cli): TENSORPAR_TEST_STALL_RANK=r makes world rank r stop answering, sleeping
// forever before its TENSORPAR_TEST_STALL_AFTER-th blocking collective (default 20), as a hung or
// SIGSTOPped rank would. Armed once by the first ProcessGroup; costs nothing when not set.
std::atomic<int> g_stall_countdown{-1};  // collectives left before stalling; -1: never
std::atomic<bool> g_watched{false};

}  // namespace

namespace detail {

std::atomic<bool> g_mark_collectives{false};

void arm_test_hooks() {
  const char* rank = std::getenv("TENSORPAR_TEST_STALL_RANK");
  if (!rank) return;
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (std::atoi(rank) != me) return;
  const char* after = std::getenv("TENSORPAR_TEST_STALL_AFTER");
  g_stall_countdown.store(after ? std::atoi(after) : 20);
  g_mark_collectives.store(true);
}

bool InCollective::mark(const char* what, const ProcessGroup& group) {
  if (const int left = g_stall_countdown.load(std::memory_order_relaxed); left >= 0) {
    if (left == 0)
      for (;;) pause();
    g_stall_countdown.store(left - 1, std::memory_order_relaxed);
  }
  if (!g_watched.load(std::memory_order_relaxed)) return false;
  g_in_flight.what.store(what, std::memory_order_relaxed);
  g_in_flight.group.store(group.name(), std::memory_order_relaxed);
  g_in_flight.group_size.store(group.size(), std::memory_order_relaxed);
  g_in_flight.active.store(++g_in_flight.serial, std::memory_order_release);
  return true;
}

void InCollective::unmark() { g_in_flight.active.store(0, std::memory_order_release); }

}  // namespace detail

CommWatchdog::CommWatchdog(double timeout_seconds, std::function<void(const std::string&)> on_timeout)
    : timeout_(timeout_seconds), on_timeout_(std::move(on_timeout)) {
  TP_CHECK(std::isfinite(timeout_seconds) && timeout_seconds > 0, ConfigError,
           "--comm-timeout must be a positive number of seconds, got {}", timeout_seconds);
  g_watched.store(true, std::memory_order_relaxed);
  detail::g_mark_collectives.store(true, std::memory_order_relaxed);
  thread_ = std::thread([this] { watch(); });
}

CommWatchdog::~CommWatchdog() {
  g_watched.store(false, std::memory_order_relaxed);
  detail::g_mark_collectives.store(g_stall_countdown.load() >= 0, std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void CommWatchdog::watch() {
  // Sample ten times per timeout (at most every second, at least every 10 ms). A call seen in flight
  // at two samples `timeout` apart has waited at least that long, and at most one period longer.
  const auto period = std::chrono::duration<double>(std::clamp(timeout_ / 10, 0.01, 1.0));
  const int64_t timeout_ns = int64_t(timeout_ * 1e9);
  uint64_t seen = 0;        // serial number of the call in flight at the last sample, 0: none
  int64_t seen_since = 0;   // when it was first seen
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (wake_.wait_for(lock, period, [this] { return stop_; })) return;
    }
    const uint64_t active = g_in_flight.active.load(std::memory_order_acquire);
    const int64_t now = now_ns();
    if (active != seen) {
      seen = active;
      seen_since = now;
      continue;
    }
    if (active == 0 || now - seen_since < timeout_ns) continue;
    const char* what = g_in_flight.what.load(std::memory_order_relaxed);
    const char* group = g_in_flight.group.load(std::memory_order_relaxed);
    const int size = g_in_flight.group_size.load(std::memory_order_relaxed);
    if (g_in_flight.active.load(std::memory_order_acquire) != active) continue;  // it completed meanwhile
    on_timeout_(fmt::format(
        "{} on the {} group ({} rank{}) did not complete within {:g} s (waited {:.1f} s): another rank of the "
        "group stopped answering (hung, stopped, or died); check the other ranks' output and their nodes, or "
        "raise --comm-timeout",
        what, group, size, size == 1 ? "" : "s", timeout_, double(now - seen_since) / 1e9));
    return;
  }
}

}  // namespace tensorpar
