#include "tensorpar/comm/mesh.hpp"

namespace tensorpar {

namespace {
int checked_tp(const ProcessGroup& world, int tp_size, int pp_size) {
  TP_CHECK(tp_size >= 1, ConfigError, "tensor-parallel size must be at least 1 (got {})", tp_size);
  TP_CHECK(pp_size >= 1, ConfigError, "--pp must be at least 1 (got {})", pp_size);
  if (pp_size == 1)
    TP_CHECK(world.size() % tp_size == 0, ConfigError,
             "tensor-parallel size {} does not divide the {} MPI ranks; launch a multiple of {} ranks", tp_size,
             world.size(), tp_size);
  TP_CHECK(world.size() % (int64_t(tp_size) * pp_size) == 0, ConfigError,
           "tensor-parallel size {} x pipeline stages {} = {} does not divide the {} MPI ranks; launch a multiple of {} "
           "ranks or change --tp/--pp",
           tp_size, pp_size, int64_t(tp_size) * pp_size, world.size(), int64_t(tp_size) * pp_size);
  return tp_size;
}

// (dp, pp, tp) coordinates of a world rank
struct Coords {
  int dp, pp, tp;
};
Coords coords(int rank, int tp_size, int pp_size) {
  return {rank / (tp_size * pp_size), rank / tp_size % pp_size, rank % tp_size};
}
}  // namespace

Mesh::Mesh(const ProcessGroup& world, int tp_size, int pp_size)
    : tp_(world.split(world.rank() / checked_tp(world, tp_size, pp_size), world.rank(), "tp")),
      // same stage and tensor rank, every replica
      dp_(world.split(world.rank() % (tp_size * pp_size), world.rank(), "dp")),
      // same replica and tensor rank, every stage (ordered by stage: the key is the world rank)
      pp_(world.split(coords(world.rank(), tp_size, pp_size).dp * tp_size + world.rank() % tp_size, world.rank(), "pp")),
      embedding_([&] {
        const Coords c = coords(world.rank(), tp_size, pp_size);
        const bool ends = pp_size > 1 && (c.pp == 0 || c.pp == pp_size - 1);
        // colours: [0, dp*tp) for the end stages' pairs, beyond that one colour per other rank
        const int color = ends ? c.dp * tp_size + c.tp : world.size() + world.rank();
        return world.split(color, world.rank(), "embedding");
      }()),
      model_parallel_(world.split(world.rank() / (tp_size * pp_size), world.rank(), "model-parallel")) {}

}  // namespace tensorpar
