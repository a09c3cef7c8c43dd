// tensorpar: the command-line tool. Every rank parses the same arguments and runs the same
// subcommand. Errors: the library throws; here every failure ends as one line
// "tensorpar: error: ..." on stderr and a non-zero exit on every rank, never a hang.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/kernels/gemm.hpp"

namespace {

// Ranks sharing this node, for the default thread count.
int local_ranks() {
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int n = 1;
  MPI_Comm_size(local, &n);
  MPI_Comm_free(&local);
  return n;
}

// Every rank reports whether it failed. If all ranks get here, the lowest failing rank prints its
// message and all exit 1. A rank whose peers never arrive (they are stuck in a collective that
// this rank's failure abandoned) prints and aborts the job instead of waiting forever.
int finish(int rank, int size, const std::string& error) {
  int first_failed = error.empty() ? size : rank;
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, &first_failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &request);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(error.empty() ? 3600 * 24 : 10);
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) break;
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "tensorpar: error: %s\n", error.c_str());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (first_failed == rank) {
    std::fprintf(stderr, "tensorpar: error: %s\n", error.c_str());
    std::fflush(stderr);
  }
  MPI_Finalize();
  return first_failed == size ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  CLI::App app{"tensorpar: train and run transformer language models with Megatron-style tensor parallelism over MPI.\n"
               "Launch with mpirun -np N; the tensor-parallel degree is N unless --tp says otherwise."};
  app.require_subcommand(1);
  // a flag given twice takes its last value, as in most Unix tools
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  int threads = 0;
  app.add_option("--threads", threads, "threads per rank for GEMMs and kernels (default: cores / ranks on this node)");
  tensorpar::cli::Runner run;
  tensorpar::cli::add_train_command(app, run);
  tensorpar::cli::add_sample_command(app, run);
  tensorpar::cli::add_report_command(app, run);
  tensorpar::cli::add_bench_command(app, run);
  tensorpar::cli::add_eval_command(app, run);
  tensorpar::cli::add_generate_command(app, run);
  tensorpar::cli::add_plan_command(app, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help: print once
    int code = 0;
    if (rank == 0) code = app.exit(e);
    MPI_Finalize();
    return code;
  } catch (const CLI::ParseError& e) {
    // same arguments on every rank, so all fail alike; rank 0 speaks for them
    if (rank == 0) std::fprintf(stderr, "tensorpar: error: %s (see tensorpar --help)\n", e.what());
    MPI_Finalize();
    return 2;
  }

  std::string error;
  int code = 0;
  try {
    const int hw = int(std::thread::hardware_concurrency());
    tensorpar::set_num_threads(threads > 0 ? threads : std::max(1, hw / local_ranks()));
    tensorpar::ProcessGroup world = tensorpar::ProcessGroup::world();
    code = run(world);
  } catch (const std::exception& e) {
    error = e.what();
  }
  const int failed = finish(rank, size, error);
  return failed ? 1 : code;
}
