// The --tp-comm-dtype flag, shared by every command that runs a model over a TP group.
#include "tensorpar/cli/command.hpp"

namespace tensorpar::cli {

void add_tp_comm_dtype_option(CLI::App* cmd, std::string& dtype) {
  cmd->add_option("--tp-comm-dtype", dtype,
                  "wire format of the tensor-parallel activation all-reduces/reduce-scatters/all-gathers: f32, "
                  "bf16 or int8 (32-value blocks with an f32 scale); summed in f32 either way")
      ->check(CLI::IsMember({"f32", "bf16", "int8"}))
      ->capture_default_str();
}

}  // namespace tensorpar::cli
