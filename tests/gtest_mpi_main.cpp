// GoogleTest under MPI: every rank runs every test; rank 0 prints the usual report and the other
// ranks print only their failures, prefixed with the rank. The exit code is non-zero on every rank
// if any rank failed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "tensorpar/core/leak_check.hpp"

namespace {

class FailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (result.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                   result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  // As in the CLI: OpenMP threads compute, only the main thread calls MPI.
  int provided = MPI_THREAD_SINGLE;
  {
    tensorpar::IgnoreLeaksOnThisThread mpi_init;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
  if (provided < MPI_THREAD_FUNNELED) {
    std::fprintf(stderr, "this MPI library does not provide MPI_THREAD_FUNNELED\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  tensorpar::check_leaks_before_mpi_finalize();
  MPI_Finalize();
  return failed;
}
