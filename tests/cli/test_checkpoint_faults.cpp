// Checkpoints under faults, end to end under mpirun: resuming a TP=2 checkpoint at 1 and 4 ranks
// continues the uninterrupted run's losses; kill -9 of the whole job (mpirun and every rank) at
// random moments while it checkpoints every step, many times, always leaves the newest checkpoint
// complete with valid checksums, never a partial step_ directory, and the next run resumes from it;
// SIGTERM to the ranks (as Slurm sends before preemption) finishes the step, checkpoints and exits
// 143; a NaN step aborts with its number or is skipped; a full disk is one error line with the
// previous checkpoint intact and no temporary directory left.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "cli/cli_runner.hpp"
#include "skip_or_fail.hpp"
#include "tensorpar/io/metrics.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "tensorpar/train/checkpoint.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

class CheckpointFaults : public testing::ScratchTextTest {
 protected:
  static std::string train_args(const std::string& extra) {
    return "train --data " + path("text.txt") + " --layers 2 --hidden 32 --heads 4 --seq 32 --batch 4" +
           " --lr 3e-3 --warmup 2 --seed 7 --json " + extra;
  }
};

std::map<int64_t, double> losses(const std::string& metrics) {
  std::map<int64_t, double> out;
  for (const auto& r : io::read_metrics(metrics))
    if (r.contains("loss")) out[r.at("step").get<int64_t>()] = r.at("loss").get<double>();
  return out;
}

// mpirun in the background, in its own process group; stdout/stderr to <prefix>.out/.err
pid_t spawn_cli(int ranks, const std::string& args, const std::string& prefix) {
  const std::string cmd = std::string("exec ") + TENSORPAR_MPIRUN + " -np " + std::to_string(ranks) +
                          " --oversubscribe --bind-to none " + TENSORPAR_CLI + " " + args + " > " + prefix +
                          ".out 2> " + prefix + ".err";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Processes whose parent is `parent` (mpirun's ranks: Open MPI puts each in its own process group,
// so killing mpirun's group alone would leave them running).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(pid_t(std::stol(name)));
  }
  return out;
}

// Open MPI's job id of a running rank (its environment), as the hex that names the job's shared-memory
// segments; "" if unknown.
std::string ompi_job_hex(pid_t rank) {
  std::ifstream in("/proc/" + std::to_string(rank) + "/environ", std::ios::binary);
  const std::string key = "OMPI_MCA_ess_base_jobid=";
  for (std::string entry; std::getline(in, entry, '\0');)
    if (entry.rfind(key, 0) == 0) return fmt::format("{:x}", std::stoull(entry.substr(key.size())));
  return "";
}

// A job killed with SIGKILL cannot remove its Open MPI segments (/dev/shm/vader_segment.<host>.<..>.
// <jobid hex>.<local rank>); left there, they pile up on a machine that runs this test often.
void remove_shared_memory_of(const std::string& job_hex) {
  if (job_hex.empty() || !fs::exists("/dev/shm")) return;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("vader_segment.", 0) == 0 && name.find("." + job_hex + ".") != std::string::npos)
      fs::remove(e.path(), ec);
  }
}

// Entries of `out` named prefix* and written since `since`: with ".tmp.step_", a save of the running
// job in progress, not a leftover of an earlier kill (the next job removes those at start and may
// reuse the name, so the name alone cannot tell them apart); with "step_", a checkpoint it completed.
int entries_written_since(const std::string& out, const std::string& prefix, fs::file_time_type since) {
  std::error_code ec;
  int n = 0;
  for (const auto& e : fs::directory_iterator(out, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) n += fs::last_write_time(e.path(), ec) >= since;
  return n;
}

bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int error_lines(const std::string& err) {
  testing::CliResult r;
  r.err = err;
  return r.error_lines();
}

// every step_ directory verifies (sizes, CRC32C, safetensors headers); returns how many; no .tmp.* check here
int verify_all_checkpoints(const std::string& out) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step_", 0) != 0) continue;
    EXPECT_NO_THROW({
      read_checkpoint_state(e.path().string(), /*verify=*/true);
      io::SafetensorsFile::open((e.path() / "model.safetensors").string());
      io::SafetensorsFile::open((e.path() / "optimizer.safetensors").string());
    }) << name;
    ++n;
  }
  return n;
}

TEST_F(CheckpointFaults, ResumeAtOtherTpDegreesContinuesTheSameLosses) {
  const auto full = run_cli(2, train_args("--steps 12 --save-every 6 --out " + path("full") + " --metrics " +
                                          path("full.jsonl")),
                            dir_);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_EQ(nlohmann::json::parse(full.last_line()).at("checkpoint"), path("full/step_00000012"));
  const auto reference = losses(path("full.jsonl"));
  for (const int ranks : {1, 4}) {
    const std::string metrics = path("resume" + std::to_string(ranks) + ".jsonl");
    const auto r = run_cli(ranks, train_args("--steps 12 --resume " + path("full/step_00000006") + " --metrics " + metrics),
                           dir_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto resumed = losses(metrics);
    ASSERT_EQ(resumed.size(), 6u);
    EXPECT_EQ(resumed.begin()->first, 7);
    for (const auto& [step, loss] : resumed) EXPECT_NEAR(loss, reference.at(step), 1e-5 * reference.at(step)) << step;
  }
  // a model flag that conflicts with the checkpoint: one error line, before anything is built
  const auto conflict = run_cli(2, train_args("--steps 12 --heads 8 --resume " + path("full/step_00000006")), dir_);
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_EQ(conflict.error_lines(), 1) << conflict.err;
  EXPECT_NE(conflict.err.find("--heads 8 (checkpoint: 4)"), std::string::npos) << conflict.err;
  // --resume auto with nothing to resume starts fresh and says so
  const auto fresh = run_cli(1, train_args("--steps 1 --resume auto --out " + path("fresh")), dir_);
  EXPECT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_NE(fresh.err.find("no checkpoint under " + path("fresh") + "; starting fresh"), std::string::npos) << fresh.err;
}

TEST_F(CheckpointFaults, KillNineDuringSavesAlwaysLeavesTheNewestCheckpointComplete) {
  const std::string out = path("killed");
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(600, 1800);
  // 20 kills; more (up to 60) while none has landed mid-save yet. Odd iterations kill at a random
  // time; even ones the moment this job starts its second save (after one it completed, so the run
  // moves on), so that some kills land mid-save however slow the build (ASan) or busy the machine:
  // with random delays alone, an ASan run on a loaded machine once spent 60 kills mostly in start-up
  // and none in a save.
  int iterations = 0;
  int mid_save = 0, with_checkpoints = 0;
  int64_t newest_step = 0;
  for (; iterations < 20 || (mid_save == 0 && iterations < 60); ++iterations) {
    const auto spawned = fs::file_time_type::clock::now();
    const pid_t mpirun = spawn_cli(2, train_args("--steps 100000 --save-every 1 --keep 2 --resume auto --out " + out),
                                   path("kill"));
    if (iterations % 2 == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    } else {
      const auto saving_again = [&] {
        return entries_written_since(out, "step_", spawned) > 0 && entries_written_since(out, ".tmp.step_", spawned) > 0;
      };
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (!saving_again() && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::vector<pid_t> job = children_of(mpirun);
    const std::string job_hex = job.empty() ? "" : ompi_job_hex(job.front());
    job.push_back(mpirun);
    for (pid_t p : job) ::kill(p, SIGKILL);
    wait_exit_code(mpirun);
    for (int t = 0; t < 200; ++t) {  // the ranks, reparented, are gone within milliseconds
      bool any = false;
      for (pid_t p : job) any = any || alive(p);
      if (!any) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    remove_shared_memory_of(job_hex);
    if (!fs::exists(out)) continue;
    mid_save += entries_written_since(out, ".tmp.step_", spawned) > 0;
    const int n = verify_all_checkpoints(out);
    with_checkpoints += n > 0;
    const std::string newest = latest_checkpoint(out);
    if (!newest.empty()) {
      const int64_t step = read_checkpoint_state(newest, false).step;
      EXPECT_GE(step, newest_step) << "a resumed run went backwards";
      newest_step = step;
    }
  }
  std::printf("kill -9 of the whole job: %d iterations, %d landed while a checkpoint was being written, %d left "
              "checkpoints, newest at step %ld\n",
              iterations, mid_save, with_checkpoints, long(newest_step));
  ASSERT_GT(newest_step, 0) << "no run got far enough to checkpoint: the delays are too short for this machine";
  EXPECT_GT(mid_save, 0) << "no kill landed during a save";
  // the job after the last kill resumes from the newest checkpoint, cleans the leftovers and finishes
  const auto r = run_cli(2, train_args("--steps " + std::to_string(newest_step + 2) + " --resume auto --out " + out), dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.last_line()).at("resumed_from"), out + "/" + checkpoint_dir_name(newest_step));
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_NE(e.path().filename().string().rfind(".tmp.", 0), 0u) << "leftover " << e.path();
}

TEST_F(CheckpointFaults, SigtermFinishesTheStepCheckpointsAndExits143) {
  const std::string out = path("term"), metrics = path("term.jsonl");
  const pid_t mpirun = spawn_cli(2, train_args("--steps 100000 --lr-schedule constant --out " + out + " --metrics " + metrics),
                                 path("term"));
  for (int t = 0; t < 600 && (!fs::exists(metrics) || losses(metrics).size() < 3); ++t)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (pid_t rank : children_of(mpirun)) ::kill(rank, SIGTERM);  // what Slurm does to every task
  const int code = wait_exit_code(mpirun);
  const std::string err = slurp(path("term.err"));
  EXPECT_EQ(code, 143) << err;
  EXPECT_EQ(error_lines(err), 0) << err;
  const std::string checkpoint = latest_checkpoint(out);
  ASSERT_FALSE(checkpoint.empty()) << err;
  const int64_t step = read_checkpoint_state(checkpoint, true).step;
  EXPECT_NE(err.find("stopped by signal 15 after step " + std::to_string(step)), std::string::npos) << err;
  EXPECT_EQ(losses(metrics).rbegin()->first, step);

  const std::string resumed_metrics = path("term_resumed.jsonl");
  const auto r = run_cli(2, train_args("--steps " + std::to_string(step + 3) + " --lr-schedule constant --resume auto --out " +
                                       out + " --metrics " + resumed_metrics),
                         dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto resumed = losses(resumed_metrics);
  ASSERT_EQ(resumed.size(), 3u);
  EXPECT_EQ(resumed.begin()->first, step + 1);
}

// A requeued job whose run had already finished: --resume auto finds the checkpoint at --steps,
// trains nothing, writes the final model again (here it was lost, as when a job dies between the
// last checkpoint and the final save) and succeeds, so the scheduler does not see a failure.
TEST_F(CheckpointFaults, ResumeAutoOfAFinishedRunRewritesTheFinalModelAndSucceeds) {
  const std::string out = path("done");
  const std::string args = train_args("--steps 4 --save-every 2 --resume auto --out " + out);
  const auto first = run_cli(2, args, dir_);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string model = slurp(out + "/model.safetensors");
  ASSERT_FALSE(model.empty());
  fs::remove(out + "/model.safetensors");
  const auto again = run_cli(2, args, dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("nothing to train"), std::string::npos) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.last_line()).at("steps"), 0);
  EXPECT_EQ(slurp(out + "/model.safetensors"), model);
  // without auto, a checkpoint already at --steps is still refused: the user asked to train further
  const auto explicit_dir = run_cli(2, train_args("--steps 4 --resume " + out + "/step_00000004"), dir_);
  EXPECT_EQ(explicit_dir.exit_code, 1);
  EXPECT_EQ(error_lines(explicit_dir.err), 1) << explicit_dir.err;
}

TEST_F(CheckpointFaults, NanStepAbortsWithItsNumberOrIsSkipped) {
  ::setenv("TENSORPAR_TEST_NAN_AT_STEP", "3", 1);
  const auto abort = run_cli(2, train_args("--steps 5"), dir_);
  const auto skip = run_cli(1, train_args("--steps 5 --on-nan skip"), dir_);
  const auto too_many = run_cli(1, train_args("--steps 5 --on-nan skip --max-nan-skips 0"), dir_);
  ::unsetenv("TENSORPAR_TEST_NAN_AT_STEP");
  EXPECT_EQ(abort.exit_code, 1);
  EXPECT_EQ(abort.error_lines(), 1) << abort.err;
  EXPECT_NE(abort.err.find("step 3: the loss is"), std::string::npos) << abort.err;
  ASSERT_EQ(skip.exit_code, 0) << skip.err;
  const auto j = nlohmann::json::parse(skip.last_line());
  EXPECT_EQ(j.at("skipped_steps"), 1);
  EXPECT_TRUE(std::isfinite(j.at("loss").get<double>()));
  EXPECT_EQ(too_many.exit_code, 1);
  EXPECT_EQ(too_many.error_lines(), 1) << too_many.err;
}

TEST_F(CheckpointFaults, DiskFullIsOneErrorWithThePreviousCheckpointIntact) {
  const std::string mnt = path("small_disk");
  fs::create_directories(mnt);
  // about two checkpoints of this model (~0.5 MB each) fit
  if (std::system(("mount -t tmpfs -o size=1100k tmpfs " + mnt + " 2>/dev/null").c_str()) != 0)
    TENSORPAR_SKIP_OR_FAIL("cannot mount a small tmpfs here (needs root and mount permission); disk-full path not tested");
  const auto r = run_cli(2, train_args("--steps 50 --save-every 1 --out " + mnt + "/out"), dir_);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.error_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot save checkpoint"), std::string::npos) << r.err;
  const std::string newest = latest_checkpoint(mnt + "/out");
  EXPECT_FALSE(newest.empty());
  EXPECT_EQ(verify_all_checkpoints(mnt + "/out"), 2);
  for (const auto& e : fs::directory_iterator(mnt + "/out"))
    EXPECT_NE(e.path().filename().string().rfind(".tmp.", 0), 0u) << "leftover " << e.path();
  std::system(("umount " + mnt).c_str());

  // an --out that cannot be a directory fails at once, before training
  const auto bad = run_cli(2, train_args("--steps 50 --save-every 1 --out /proc/tensorpar_not_writable"), dir_);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.error_lines(), 1) << bad.err;
  EXPECT_NE(bad.err.find("is not a writable directory"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace tensorpar
