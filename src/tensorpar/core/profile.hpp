// A switchable per-phase wall-clock profile: TP_PROFILE_SCOPE("attention.forward") adds the
// scope's duration to a per-process table when profiling is on (bench --profile) and costs one
// branch when it is off. Phases nest; each reports its own inclusive time. Thread-safe: a scope
// inside an OpenMP region is recorded by every thread that runs it, so its seconds add up over the
// threads (thread-seconds, which can exceed the wall time of the region) and its calls count them all.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace tensorpar {

struct ProfileEntry {
  double seconds = 0;
  int64_t calls = 0;
};

bool profiling_enabled();
void set_profiling(bool on);
void reset_profile();
// A snapshot of the table (other threads may be adding to it).
std::map<std::string, ProfileEntry> profile();
void add_to_profile(const char* phase, double seconds);

class ProfileScope {
 public:
  explicit ProfileScope(const char* phase) : phase_(profiling_enabled() ? phase : nullptr) {
    if (phase_) start_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (phase_) add_to_profile(phase_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* phase_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tensorpar

#define TP_PROFILE_CONCAT2(a, b) a##b
#define TP_PROFILE_CONCAT(a, b) TP_PROFILE_CONCAT2(a, b)
#define TP_PROFILE_SCOPE(phase) ::tensorpar::ProfileScope TP_PROFILE_CONCAT(tp_profile_scope_, __LINE__)(phase)
