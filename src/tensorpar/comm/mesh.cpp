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

Mesh::Mesh(const ProcessGroup& world, int tp_size)
    : tp_(world.split(world.rank() / checked_tp(world, tp_size), world.rank(), "tp")),
      dp_(world.split(world.rank() % tp_size, world.rank(), "dp")) {}

}  // namespace tensorpar
