#include "tensorpar/comm/idle_broadcast.hpp"

#include <algorithm>
#include <cstdint>
#include <thread>

namespace tensorpar {

void broadcast_string_patiently(ProcessGroup& group, std::string& s, int root, std::chrono::microseconds spin,
                                std::chrono::microseconds max_nap) {
  if (group.size() == 1) return;
  int64_t size = int64_t(s.size());
  MPI_Request request;
  MPI_CHECK(MPI_Ibcast(&size, 1, MPI_INT64_T, root, group.comm(), &request), "broadcast (size)");
  const auto start = std::chrono::steady_clock::now();
  // short naps while the root is probably just busy (a step of a loaded machine), growing ones once
  // it has been quiet for 100 ms (no work: the first step after it waits at most max_nap)
  auto nap = std::chrono::microseconds(100);
  for (int done = 0;;) {
    MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "broadcast (size)");
    if (done) break;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited > spin) std::this_thread::sleep_for(nap);
    if (waited > std::chrono::milliseconds(100)) nap = std::min(2 * nap, max_nap);
  }
  if (group.rank() != root) s.resize(size_t(size));
  if (size > 0) MPI_CHECK(MPI_Bcast(s.data(), int(size), MPI_CHAR, root, group.comm()), "broadcast");
}

}  // namespace tensorpar
