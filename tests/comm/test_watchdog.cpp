// CommWatchdog at every world size: a collective kept waiting by a late rank is reported with its
// name, group and size once the timeout passes; a quiet time between collectives, or collectives that
// complete in time, are never reported. The callback records instead of ending the process.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/comm/watchdog.hpp"

namespace tensorpar {
namespace {

struct Reports {
  std::mutex mutex;
  std::string message;
  std::atomic<int> count{0};
  std::function<void(const std::string&)> callback() {
    return [this](const std::string& m) {
      std::lock_guard lock(mutex);
      message = m;
      count.fetch_add(1);
    };
  }
};

TEST(CommWatchdog, ReportsACollectiveKeptWaitingWithItsGroupAndSize) {
  ProcessGroup world = ProcessGroup::world();
  Mesh mesh(world, world.size());  // one tp group of all ranks
  EXPECT_STREQ(world.name(), "world");
  EXPECT_STREQ(mesh.tp().name(), "tp");
  EXPECT_STREQ(mesh.dp().name(), "dp");
  if (world.size() == 1) return;  // a group of one never waits (its collectives make no MPI call)
  Reports reports;
  {
    // only rank 0 watches: the last rank arrives 1.5 s late, 0.3 s is the timeout
    std::unique_ptr<CommWatchdog> watchdog;
    if (world.rank() == 0) watchdog = std::make_unique<CommWatchdog>(0.3, reports.callback());
    if (world.rank() == world.size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    std::vector<float> x(4, 1.0f);
    mesh.tp().all_reduce(std::span<float>(x));
    EXPECT_EQ(x[0], float(world.size()));  // it still completes: the callback decides what happens
  }
  if (world.rank() == 0) {
    ASSERT_EQ(reports.count.load(), 1);
    const std::string expected =
        "all_reduce on the tp group (" + std::to_string(world.size()) + " ranks) did not complete within 0.3 s";
    EXPECT_NE(reports.message.find(expected), std::string::npos) << reports.message;
  } else {
    EXPECT_EQ(reports.count.load(), 0);
  }
}

TEST(CommWatchdog, SilentBetweenCollectivesAndWhenTheyCompleteInTime) {
  ProcessGroup world = ProcessGroup::world();
  Reports reports;
  {
    CommWatchdog watchdog(1.0, reports.callback());  // generous: ranks of an oversubscribed job drift apart
    std::vector<float> x(1000, 1.0f);
    for (int i = 0; i < 5; ++i) {
      world.all_reduce(std::span<float>(x));
      world.barrier();
      std::this_thread::sleep_for(std::chrono::milliseconds(250));  // 1.25 s in all: longer than the timeout
    }
  }
  EXPECT_EQ(reports.count.load(), 0) << reports.message;
}

TEST(CommWatchdog, RefusesATimeoutThatIsNotAPositiveNumber) {
  EXPECT_THROW(CommWatchdog(0, [](const std::string&) {}), ConfigError);
  EXPECT_THROW(CommWatchdog(-1, [](const std::string&) {}), ConfigError);
  EXPECT_THROW(CommWatchdog(std::nan(""), [](const std::string&) {}), ConfigError);
}

}  // namespace
}  // namespace tensorpar
