// broadcast_string_patiently: every rank ends with the root's string, from any root, empty or not,
// also when the root arrives long after the others (they sleep between polls instead of spinning),
// and the waiting ranks use far less CPU time than the wall time they wait.
#include <gtest/gtest.h>

#include <ctime>
#include <thread>

#include "tensorpar/comm/idle_broadcast.hpp"

namespace tensorpar {

namespace {
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
}  // namespace

TEST(IdleBroadcast, EveryRankGetsTheRootsStringFromAnyRoot) {
  ProcessGroup world = ProcessGroup::world();
  for (int root = 0; root < world.size(); ++root)
    for (const std::string& payload : {std::string(), std::string("step {\"add\": []}"), std::string(100000, 'x')}) {
      std::string s = world.rank() == root ? payload : std::string("stale");
      broadcast_string_patiently(world, s, root);
      EXPECT_EQ(s, payload) << "root " << root << ", " << payload.size() << " bytes";
    }
}

TEST(IdleBroadcast, WaitingRanksSleepInsteadOfSpinning) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() == 1) {  // nothing to wait for: returns at once with the string untouched
    std::string s = "same";
    broadcast_string_patiently(world, s, 0);
    EXPECT_EQ(s, "same");
    return;
  }
  world.barrier();
  std::string s = world.rank() == 0 ? "late" : "";
  const double cpu0 = cpu_seconds();
  if (world.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  broadcast_string_patiently(world, s, 0);
  const double cpu = cpu_seconds() - cpu0;
  EXPECT_EQ(s, "late");
  // a spinning wait would burn ~0.3 s of CPU; the 2 ms spin plus naps of up to 5 ms burn ~1%
  if (world.rank() != 0) {
    EXPECT_LT(cpu, 0.1) << "CPU seconds spent waiting 0.3 s for the root";
  }
}

}  // namespace tensorpar
