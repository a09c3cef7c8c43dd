// A string broadcast for a root that may have nothing to send for a long time (a server waiting for
// requests). A blocking MPI_Bcast busy-polls in Open MPI: the ranks waiting for the root would hold a
// core each at 100% while the server is idle. Here the non-root ranks poll a non-blocking broadcast
// of the size, spinning only for the first `spin` and then sleeping `nap` between polls, so an idle
// server costs no CPU and a busy one (the root sends every step) adds no latency.
#pragma once
#include <chrono>
#include <string>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

// Collective over `group`: every rank ends with the root's `s`.
void broadcast_string_patiently(ProcessGroup& group, std::string& s, int root,
                                std::chrono::microseconds spin = std::chrono::microseconds(2000),
                                std::chrono::microseconds nap = std::chrono::microseconds(500));

}  // namespace tensorpar
