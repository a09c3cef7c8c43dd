// Which ranks share a host: MPI's MPI_COMM_TYPE_SHARED split (ranks that can share memory), so
// layers above comm/ can tell intra-host from inter-host groups without touching MPI.
#pragma once
#include "tensorpar/comm/process_group.hpp"

namespace tensorpar {

// Collective over `group`: the ranks of `group` on this rank's host, in group-rank order.
// ranks_per_host > 0: hosts hold consecutive ranks, that many each (mpirun --map-by slot), which is
// what to use where Open MPI's shared-memory split misbehaves: with the shared-memory BTL excluded
// (--mca btl tcp,self, as scripts/cluster.sh runs) Open MPI 4.1 crashes or hangs in it.
// 0: ask MPI (MPI_COMM_TYPE_SHARED).
ProcessGroup split_by_host(const ProcessGroup& group, int ranks_per_host = 0);

}  // namespace tensorpar
