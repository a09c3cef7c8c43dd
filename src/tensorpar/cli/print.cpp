#include <cstdio>

#include "tensorpar/cli/command.hpp"

namespace tensorpar::cli {

void print_rank0(const ProcessGroup& world, const std::string& text) {
  if (world.rank() != 0) return;
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace tensorpar::cli
