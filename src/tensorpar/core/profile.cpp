#include "tensorpar/core/profile.hpp"

namespace tensorpar {

namespace {
bool g_enabled = false;
std::map<std::string, ProfileEntry>& table() {
  static std::map<std::string, ProfileEntry> t;
  return t;
}
}  // namespace

bool profiling_enabled() { return g_enabled; }
void set_profiling(bool on) { g_enabled = on; }
void reset_profile() { table().clear(); }
const std::map<std::string, ProfileEntry>& profile() { return table(); }
void add_to_profile(const char* phase, double seconds) {
  ProfileEntry& e = table()[phase];
  e.seconds += seconds;
  e.calls += 1;
}

}  // namespace tensorpar
