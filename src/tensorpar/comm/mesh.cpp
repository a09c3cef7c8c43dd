#include "tensorpar/comm/mesh.hpp"

namespace tensorpar {

namespace {
int checked_tp(const ProcessGroup& world, int tp_size) {
  TP_CHECK(tp_size >= 1 && world.size() % tp_size == 0, ConfigError,
           "tensor-parallel size {} does not divide the {} MPI ranks; launch a multiple of {} ranks", tp_size,
           world.size(), tp_size);
  return tp_size;
}
}  // namespace

ProcessGroup Mesh::split(const ProcessGroup& world, int color, int key, const char* name) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(world.comm(), color, key, &comm), "Comm_split");
  ProcessGroup group(comm, name);  // duplicates
  MPI_Comm_free(&comm);
  return group;
}

Mesh::Mesh(const ProcessGroup& world, int tp_size)
    : tp_(split(world, world.rank() / checked_tp(world, tp_size), world.rank(), "tp")),
      dp_(split(world, world.rank() % tp_size, world.rank(), "dp")) {}

}  // namespace tensorpar
