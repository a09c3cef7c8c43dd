// Runs the tensorpar executable under mpirun and captures its exit code, stdout and stderr.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tensorpar::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
  // How many stderr lines start with the project's error prefix.
  int error_lines() const {
    std::istringstream in(err);
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.rfind("tensorpar: error:", 0) == 0;
    return n;
  }
  // The last non-empty stdout line.
  std::string last_line() const {
    std::istringstream in(out);
    std::string last;
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) last = line;
    return last;
  }
};

// `command` run by the shell with stdout and stderr captured in files under `scratch`.
inline CliResult run_captured(const std::string& command, const std::string& scratch) {
  const std::string out_path = scratch + "/stdout.txt", err_path = scratch + "/stderr.txt";
  const int status = std::system((command + " > " + out_path + " 2> " + err_path).c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

// `ranks` MPI processes of `tensorpar <args>`; a 120 s timeout turns a hang into a failure.
// odls_base_sigkill_timeout 0: when a rank exits non-zero, mpirun ends the job and by default waits 1 s
// before it kills what is left; most runs here are meant to fail, and that second was half their time.
// (Tests of how ranks react to mpirun's signals launch mpirun themselves, with the default.)
inline CliResult run_cli(int ranks, const std::string& args, const std::string& scratch) {
  // appended piece by piece: GCC 12 at -O1 warns (-Warray-bounds, a known false positive) on the chain of +
  std::string command = "timeout 120 ";
  command += TENSORPAR_MPIRUN;
  command += " -np " + std::to_string(ranks) + " --oversubscribe --bind-to none --mca odls_base_sigkill_timeout 0 ";
  command += TENSORPAR_CLI;
  command += " " + args;
  return run_captured(command, scratch);
}

// A fixture whose test suite shares a scratch directory holding text.txt, 300 lines of English:
// the training data of the CLI tests. path(name) is a file in that directory.
class ScratchTextTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (std::filesystem::temp_directory_path() / ("tensorpar_cli_" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(dir_);
    std::ofstream out(path("text.txt"));
    for (int i = 0; i < 300; ++i)
      out << "It was the best of times, it was the worst of times; line " << i % 13 << " of a tale.\n";
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string path(const std::string& name) { return dir_ + "/" + name; }
  static inline std::string dir_;
};

}  // namespace tensorpar::testing
