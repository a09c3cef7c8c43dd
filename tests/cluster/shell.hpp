// What the cluster and Slurm tests share: a shell command with a time limit and captured output,
// the small training run they all launch, and the step-by-step loss comparison.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.hpp"
#include "tensorpar/io/metrics.hpp"

namespace tensorpar::testing {

// scripts/cluster.sh and scripts/slurm_local.sh exit with this when the machine cannot host them
// (not root, no namespaces, Slurm not installed); the message on stderr says why.
inline constexpr int kSkipExit = 77;
inline constexpr int kSteps = 6;

using ShellResult = CliResult;

// `sh -c cmd` in `scratch`; a 300 s limit turns a hang into a failure (exit 124).
inline ShellResult shell(const std::string& cmd, const std::string& scratch) {
  std::ofstream(scratch + "/shell_cmd.sh") << cmd << "\n";
  return run_captured("cd " + scratch + " && timeout 300 sh " + scratch + "/shell_cmd.sh", scratch);
}

// A small text corpus (the tests train a byte-level model on it).
inline void write_text(const std::string& path) {
  std::ofstream out(path);
  for (int i = 0; i < 300; ++i)
    out << "It was the best of times, it was the worst of times; line " << i % 13 << " of a tale.\n";
}

// A tiny model for kSteps steps with `batch` sequences per data-parallel rank, losses to `metrics`.
inline std::string train_args(const std::string& data, int batch, const std::string& metrics) {
  return "train --data " + data + " --layers 2 --hidden 32 --heads 4 --seq 32 --batch " + std::to_string(batch) +
         " --steps " + std::to_string(kSteps) + " --lr 3e-3 --warmup 2 --seed 7 --metrics " + metrics + " --json";
}

// Same loss at every step. The runs differ only in the order of float sums (TP splits GEMMs and
// all-reduces partial products, DP averages replica gradients): a few ulps per step, grown by six
// AdamW steps, stay far below 1e-5 relative; a wrong shard or a missed reduction moves it by >1e-3.
inline std::vector<nlohmann::json> train_records(const std::string& metrics) {
  std::vector<nlohmann::json> steps;
  for (auto& r : io::read_metrics(metrics))
    if (r.contains("loss")) steps.push_back(std::move(r));  // not the validation records
  return steps;
}

inline void expect_same_losses(const std::string& reference, const std::string& parallel) {
  const auto ref = train_records(reference), par = train_records(parallel);
  ASSERT_EQ(ref.size(), size_t(kSteps)) << reference;
  ASSERT_EQ(par.size(), size_t(kSteps)) << parallel;
  for (int s = 0; s < kSteps; ++s) {
    ASSERT_EQ(int(ref[s].at("step")), s + 1) << reference;
    ASSERT_EQ(int(par[s].at("step")), s + 1) << parallel;
    const double a = ref[s].at("loss"), b = par[s].at("loss");
    EXPECT_NEAR(b, a, 1e-5 * std::abs(a)) << "step " << s + 1;
  }
}

}  // namespace tensorpar::testing
