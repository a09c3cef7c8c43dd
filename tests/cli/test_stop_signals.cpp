// The stop signals of `train` (cli/stop_signals.hpp): blocked from before MPI_Init, taken after a
// step, and a second one ends the process. Each case runs in a forked child (death test), as the
// signal mask and the taken signal are process state.
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <thread>

#include "tensorpar/cli/stop_signals.hpp"

namespace tensorpar::cli {
namespace {

bool blocked_in_this_thread(int sig) {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}

TEST(StopSignalsDeathTest, ASignalWaitsUntilTakenAndASecondOneEndsTheProcess) {
  EXPECT_EXIT(
      {
        std::signal(SIGINT, SIG_IGN);  // as a shell starts a background job: the second one must still end it
        block_stop_signals();
        if (take_stop_signal() != 0) std::_Exit(3);
        ::kill(::getpid(), SIGTERM);  // process-directed, as Slurm sends it: pending, nothing interrupted
        if (take_stop_signal() != SIGTERM) std::_Exit(4);
        if (take_stop_signal() != SIGTERM) std::_Exit(5);  // stays taken for the rest of the run
        ::kill(::getpid(), SIGINT);  // the second one: default action
        ::sleep(5);
        std::_Exit(6);
      },
      testing::KilledBySignal(SIGINT), "");
}

TEST(StopSignalsDeathTest, ThreadsStartedAfterBlockingInheritTheMask) {
  EXPECT_EXIT(
      {
        block_stop_signals();
        bool inherited = false;
        std::thread([&] { inherited = blocked_in_this_thread(SIGTERM) && blocked_in_this_thread(SIGINT); }).join();
        std::_Exit(inherited ? 0 : 7);
      },
      testing::ExitedWithCode(0), "");
}

TEST(StopSignalsDeathTest, UnblockedTheDefaultEndsOtherCommandsAtOnce) {
  EXPECT_EXIT(
      {
        block_stop_signals();
        unblock_stop_signals();
        ::kill(::getpid(), SIGTERM);
        ::sleep(5);
        std::_Exit(8);
      },
      testing::KilledBySignal(SIGTERM), "");
}

}  // namespace
}  // namespace tensorpar::cli
