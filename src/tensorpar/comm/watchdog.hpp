// CommWatchdog: turns a collective that never completes into an error. A blocking MPI collective
// cannot be cancelled, so a rank whose peer stopped answering (stuck, stopped, lost) would wait
// forever, and a job would burn its allocation in silence. As NCCL's watchdog does, every blocking
// MPI call of a ProcessGroup marks "collective X on group G in flight" in a process-wide slot (a few
// atomic stores, no clock read; only the main thread calls MPI, so at most one is in flight), and a
// thread that makes no MPI calls samples the slot ten times per timeout. A call still in flight after
// the timeout is reported to the owner's callback with a message naming it, the group, its size and
// the time waited; the callback decides how the process ends (main prints it and calls _exit, and
// mpirun then ends the other ranks). Without a watchdog the marks are skipped: a load and a branch.
// One watchdog per process at a time.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <functional>
#include <string>
#include <thread>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

class CommWatchdog {
 public:
  // Starts watching. on_timeout runs on the watchdog thread, once; it must not call MPI.
  CommWatchdog(double timeout_seconds, std::function<void(const std::string& message)> on_timeout);
  ~CommWatchdog();  // stops watching
  CommWatchdog(const CommWatchdog&) = delete;
  CommWatchdog& operator=(const CommWatchdog&) = delete;

 private:
  void watch();
  double timeout_;
  std::function<void(const std::string&)> on_timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mutex_
  std::thread thread_;
};

namespace detail {
// True while a watchdog runs (or the test stall hook is armed): only then are collectives marked.
extern std::atomic<bool> g_mark_collectives;
// Arms the test stall hook if the environment asks for it (watchdog.cpp); ProcessGroup calls it once.
void arm_test_hooks();

// Marks one blocking MPI call of `group` as in flight for its lifetime (ProcessGroup's own use).
// Inline so that without a watchdog a collective pays one relaxed load and a branch.
class InCollective {
 public:
  InCollective(const char* what, const ProcessGroup& group) {
    if (g_mark_collectives.load(std::memory_order_relaxed)) [[unlikely]] marked_ = mark(what, group);
  }
  ~InCollective() {
    if (marked_) unmark();
  }
  InCollective(const InCollective&) = delete;
  InCollective& operator=(const InCollective&) = delete;

 private:
  static bool mark(const char* what, const ProcessGroup& group);
  static void unmark();
  bool marked_ = false;
};
}  // namespace detail

}  // namespace tensorpar
