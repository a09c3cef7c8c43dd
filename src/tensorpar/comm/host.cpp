#include "tensorpar/comm/host.hpp"

namespace tensorpar {

ProcessGroup split_by_host(const ProcessGroup& group, int ranks_per_host) {
  if (ranks_per_host > 0) return group.split(group.rank() / ranks_per_host, group.rank(), "host");
  // The shared-memory communicator itself is only asked who is in it: duplicating it (as a
  // ProcessGroup would) crashes Open MPI 4.1 when the shared-memory BTL is excluded (--mca btl tcp,self).
  MPI_Comm local = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(group.comm(), MPI_COMM_TYPE_SHARED, group.rank(), MPI_INFO_NULL, &local),
            "split_by_host");
  MPI_Group local_group = MPI_GROUP_NULL, all_group = MPI_GROUP_NULL;
  MPI_CHECK(MPI_Comm_group(local, &local_group), "split_by_host");
  MPI_CHECK(MPI_Comm_group(group.comm(), &all_group), "split_by_host");
  int zero = 0, first = 0;  // the group rank of the host's first rank names the host
  MPI_CHECK(MPI_Group_translate_ranks(local_group, 1, &zero, all_group, &first), "split_by_host");
  MPI_Group_free(&local_group);
  MPI_Group_free(&all_group);
  MPI_Comm_free(&local);
  return group.split(first, group.rank(), "host");
}

}  // namespace tensorpar
