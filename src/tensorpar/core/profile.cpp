#include "tensorpar/core/profile.hpp"

#include <atomic>
#include <mutex>

namespace tensorpar {

namespace {
// Relaxed is enough: the flag is set before the work it profiles starts, by the thread that starts it.
std::atomic<bool> g_enabled{false};
// Phases are recorded from inside OpenMP regions (a GEMM in attention's per-head loop runs on every
// thread of the team), so the table is behind a mutex. Uncontended it costs ~20 ns per scope, against
// microseconds for the GEMM it times, and nothing at all when profiling is off.
std::mutex g_mutex;
std::map<std::string, ProfileEntry>& table() {
  static std::map<std::string, ProfileEntry> t;
  return t;
}
}  // namespace

bool profiling_enabled() { return g_enabled.load(std::memory_order_relaxed); }
void set_profiling(bool on) { g_enabled.store(on, std::memory_order_relaxed); }
void reset_profile() {
  std::lock_guard lock(g_mutex);
  table().clear();
}
std::map<std::string, ProfileEntry> profile() {
  std::lock_guard lock(g_mutex);
  return table();
}
void add_to_profile(const char* phase, double seconds) {
  std::lock_guard lock(g_mutex);
  ProfileEntry& e = table()[phase];
  e.seconds += seconds;
  e.calls += 1;
}

}  // namespace tensorpar
