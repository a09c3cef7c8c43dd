// A string broadcast for a root that may have nothing to send for a long time (a server waiting for
// requests). A blocking MPI_Bcast busy-polls in Open MPI: the ranks waiting for the root would hold a
// core each at 100% while the server is idle. Here the non-root ranks poll a non-blocking broadcast
// of the size, spinning only for the first `spin`, then sleeping 100 us between polls, and after
// 100 ms without a message twice as long each time up to `max_nap`: an idle server costs well under
// 1% of a core, a busy one (the root sends every step) adds at most 100 us to a step, and the first
// step after a long idle waits at most max_nap.
#pragma once
#include <chrono>
#include <string>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

// Collective over `group`: every rank ends with the root's `s`.
void broadcast_string_patiently(ProcessGroup& group, std::string& s, int root,
                                std::chrono::microseconds spin = std::chrono::microseconds(2000),
                                std::chrono::microseconds max_nap = std::chrono::microseconds(5000));

}  // namespace tensorpar
