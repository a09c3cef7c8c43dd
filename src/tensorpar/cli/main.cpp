// tensorpar: the command-line tool. Every rank parses the same arguments and runs the same
// subcommand. Errors: the library throws; here every failure ends as one line
// "tensorpar: error: ..." on stderr and a non-zero exit on every rank, never a hang.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <thread>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/cli/stop_signals.hpp"
#include "tensorpar/comm/watchdog.hpp"
#include "tensorpar/core/leak_check.hpp"
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

// How long a failed rank waits for the others to report before it ends the job on its own. Ranks that
// fail alike (bad arguments, a missing file, an error agreed on with agree()) arrive within
// milliseconds; a rank that failed alone would wait for ever, its peers blocked in a collective it
// abandoned. A blocking collective cannot be interrupted, so the failed rank prints its error and
// exits; mpirun then ends the others.
constexpr double kPeerWaitSeconds = 1.0;

// Exit codes (README "Exit codes"): 1 an error, 2 a bad command line, kExitCommTimeout a collective
// that did not complete within --comm-timeout.
constexpr int kExitCommTimeout = 124;  // as timeout(1)

void print_error(const std::string& error) {
  std::fprintf(stderr, "tensorpar: error: %s\n", error.c_str());
  std::fflush(stderr);
}

void finalize_mpi() {
  tensorpar::check_leaks_before_mpi_finalize();
  MPI_Finalize();
}

// Every rank reports whether it failed. If all ranks get here, the lowest failing rank prints its
// message and all exit 1 after MPI_Finalize. A failed rank whose peers do not arrive within
// kPeerWaitSeconds prints its message and leaves at once with _exit (no MPI_Finalize: that would wait
// for the peers too; no MPI_Abort: its banner would bury the one line), and mpirun ends the job.
int finish(tensorpar::ProcessGroup& world, const std::string& error) {
  const int rank = world.rank(), size = world.size();
  int first_failed = error.empty() ? size : rank;
  MPI_Request request;
  MPI_Iallreduce(MPI_IN_PLACE, &first_failed, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &request);
  {
    // A rank that succeeded waits as long as it takes, watched by --comm-timeout like any collective.
    tensorpar::detail::InCollective in_flight("final error agreement", world);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kPeerWaitSeconds);
    int done = 0;
    while (!done) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) break;
      if (!error.empty() && std::chrono::steady_clock::now() > deadline) {
        std::fflush(stdout);
        print_error(error);
        _exit(1);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  if (first_failed == rank) print_error(error);
  finalize_mpi();
  return first_failed == size ? 0 : 1;
}

// Last resort for an exception that escapes a thread (an OpenMP region whose body was not wrapped in
// ParallelErrors, the watchdog): one line and exit 1 instead of "terminate called after throwing" and
// a core dump. Exceptions on the main thread never get here; they reach finish().
[[noreturn]] void on_terminate() {
  std::string what = "unknown exception";
  if (const std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
    }
  } else {
    what = "std::terminate called without an exception";
  }
  std::fflush(stdout);
  print_error("internal error: " + what + " (escaped a worker thread; please report it)");
  _exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  std::set_terminate(on_terminate);
  // before MPI_Init, so that MPI's threads inherit the mask: train polls SIGTERM/SIGINT (stop_signals.hpp)
  tensorpar::cli::block_stop_signals();
  // OpenMP threads compute; only this thread calls MPI.
  int provided = MPI_THREAD_SINGLE;
  {
    tensorpar::IgnoreLeaksOnThisThread mpi_init;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (provided < MPI_THREAD_FUNNELED) {
    if (rank == 0) print_error("this MPI library does not support threads (MPI_THREAD_FUNNELED); use Open MPI or MPICH");
    finalize_mpi();
    return 1;
  }

  CLI::App app{"tensorpar: train and run transformer language models with Megatron-style tensor parallelism over MPI.\n"
               "Launch with mpirun -np N; the tensor-parallel degree is N unless --tp says otherwise."};
  app.require_subcommand(1);
  // a flag given twice takes its last value, as in most Unix tools
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  int threads = 0;
  app.add_option("--threads", threads, "threads per rank for GEMMs and kernels (default: cores / ranks on this node)");
  double comm_timeout = 0;
  app.add_option("--comm-timeout", comm_timeout,
                 "seconds a collective may wait for the other ranks before the job ends with an error naming it "
                 "(exit code 124); 0: wait for ever (default). Set it above the longest step plus checkpoint time")
      ->check(CLI::NonNegativeNumber);
  tensorpar::cli::Runner run;
  tensorpar::cli::add_train_command(app, run);
  tensorpar::cli::add_sample_command(app, run);
  tensorpar::cli::add_report_command(app, run);
  tensorpar::cli::add_bench_command(app, run);
  tensorpar::cli::add_eval_command(app, run);
  tensorpar::cli::add_generate_command(app, run);
  tensorpar::cli::add_tokenize_command(app, run);
  tensorpar::cli::add_serve_command(app, run);
  tensorpar::cli::add_plan_command(app, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help: print once
    int code = 0;
    if (rank == 0) code = app.exit(e);
    finalize_mpi();
    return code;
  } catch (const CLI::ParseError& e) {
    // same arguments on every rank, so all fail alike; rank 0 speaks for them
    if (rank == 0) std::fprintf(stderr, "tensorpar: error: %s (see tensorpar --help)\n", e.what());
    finalize_mpi();
    return 2;
  }

  // train and serve poll them; every other command is ended by them at once
  if (!app.got_subcommand("train") && !app.got_subcommand("serve")) tensorpar::cli::unblock_stop_signals();
  tensorpar::ProcessGroup world = tensorpar::ProcessGroup::world();
  std::unique_ptr<tensorpar::CommWatchdog> watchdog;
  std::string error;
  int code = 0;
  try {
    // A stuck collective ends this process with one line; mpirun then ends the other ranks.
    if (comm_timeout != 0)
      watchdog = std::make_unique<tensorpar::CommWatchdog>(comm_timeout, [](const std::string& message) {
        std::fflush(stdout);
        print_error(message);
        _exit(kExitCommTimeout);
      });
    const int hw = int(std::thread::hardware_concurrency());
    tensorpar::set_num_threads(threads > 0 ? threads : std::max(1, hw / local_ranks()));
    code = run(world);
  } catch (const std::exception& e) {
    error = e.what();
  }
  const int failed = finish(world, error);
  return failed ? 1 : code;
}
