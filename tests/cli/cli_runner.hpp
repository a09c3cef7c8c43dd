// Runs the tensorpar executable under mpirun and captures its exit code, stdout and stderr.
#pragma once
#include <sys/wait.h>

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

// `ranks` MPI processes of `tensorpar <args>`; a 120 s timeout turns a hang into a failure.
inline CliResult run_cli(int ranks, const std::string& args, const std::string& scratch) {
  const std::string out_path = scratch + "/stdout.txt", err_path = scratch + "/stderr.txt";
  const std::string cmd = std::string("timeout 120 ") + TENSORPAR_MPIRUN + " -np " + std::to_string(ranks) +
                          " --oversubscribe --bind-to none " + TENSORPAR_CLI + " " + args + " > " + out_path +
                          " 2> " + err_path;
  const int status = std::system(cmd.c_str());
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

}  // namespace tensorpar::testing
