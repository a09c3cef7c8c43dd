// Training through Slurm: scripts/slurm_local.sh starts munged, slurmctld and slurmd on this
// machine, and the README's example batch script (scripts/examples/train.sbatch, 4 ranks, TP=2 x
// DP=2 under mpirun inside the allocation) runs with `sbatch --wait`; its losses equal one
// process's with the same global batch. Skipped, with the reason, only where Slurm cannot run here
// (not root, slurm-wlm or munge not installed).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "cli/cli_runner.hpp"
#include "cluster/shell.hpp"
#include "skip_or_fail.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;

class Slurm : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tensorpar_slurm_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    testing::write_text(dir_ + "/text.txt");
    env_ = "TENSORPAR_SLURM_DIR=" + dir_ + "/slurm ";
    const auto start = testing::shell(env_ + script_ + " start --cpus 4", dir_);
    started_ = start.exit_code == 0;
    if (start.exit_code == testing::kSkipExit) TENSORPAR_SKIP_OR_FAIL(start.err);
    ASSERT_EQ(start.exit_code, 0) << start.out << start.err;
  }
  void TearDown() override {
    const auto stop = testing::shell(env_ + script_ + " stop", dir_);
    if (started_) {
      EXPECT_EQ(stop.exit_code, 0) << stop.err;
    }
    fs::remove_all(dir_);
  }
  std::string dir_, env_;
  const std::string script_ = std::string(TENSORPAR_SOURCE_DIR) + "/scripts/slurm_local.sh";
  bool started_ = false;
};

TEST_F(Slurm, ExampleBatchScriptTrainsLikeOneProcess) {
  const auto ref = testing::run_cli(1, testing::train_args(dir_ + "/text.txt", 4, dir_ + "/ref.jsonl"), dir_);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;

  // the example's model and steps are the tests' (train_args); its batch 2 per replica x DP=2 = 4.
  // Slurm's 4 CPUs are 2 cores here: waiting ranks must yield them (sbatch passes the environment on).
  const std::string job = "OMPI_MCA_mpi_yield_when_idle=1 SLURM_CONF=" + dir_ + "/slurm/slurm.conf DATA=" + dir_ + "/text.txt TENSORPAR=" +
                          TENSORPAR_CLI + " OUT=" + dir_ + "/job sbatch --wait --output=" + dir_ + "/job.out " +
                          TENSORPAR_SOURCE_DIR + "/scripts/examples/train.sbatch";
  const auto r = testing::shell(job, dir_);
  const auto log = testing::shell("cat " + dir_ + "/job.out", dir_).out;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << "\njob output:\n" << log;
  EXPECT_NE(r.out.find("Submitted batch job"), std::string::npos) << r.out;
  testing::expect_same_losses(dir_ + "/ref.jsonl", dir_ + "/job.jsonl");
  // the job's own summary line (rank 0's --json) reports the last step's loss
  std::string last;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') last = line;
  ASSERT_FALSE(last.empty()) << log;
  const double job_loss = nlohmann::json::parse(last).at("loss");
  EXPECT_NEAR(job_loss, double(nlohmann::json::parse(ref.last_line()).at("loss")), 1e-5 * job_loss);
}

}  // namespace
}  // namespace tensorpar
