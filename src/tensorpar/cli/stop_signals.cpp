#include "tensorpar/cli/stop_signals.hpp"

#include <pthread.h>

#include <csignal>
#include <ctime>

namespace tensorpar::cli {

namespace {
sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}
int g_taken = 0;
}  // namespace

void block_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void unblock_stop_signals() {
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int take_stop_signal() {
  if (g_taken != 0) return g_taken;
  const sigset_t set = stop_set();
  const timespec now{0, 0};
  const int sig = sigtimedwait(&set, nullptr, &now);  // -1 (EAGAIN) when none is pending
  if (sig > 0) {
    g_taken = sig;
    // the default action, not an inherited one: a shell starts background jobs with SIGINT ignored
    std::signal(SIGTERM, SIG_DFL);
    std::signal(SIGINT, SIG_DFL);
    unblock_stop_signals();
  }
  return g_taken;
}

}  // namespace tensorpar::cli
