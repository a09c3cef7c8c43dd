// tensorpar plan from the command line: the JSON lists every (TP, DP) layout of 2 hosts x 2 ranks with
// TP=4 marked as crossing hosts and a recommendation that fits; a memory limit below every layout
// marks them all as not fitting; bad input ends with one error line on every rank count.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "cli/cli_runner.hpp"

namespace tensorpar {
namespace {

using testing::run_cli;

std::string scratch() {
  const std::string dir = (std::filesystem::temp_directory_path() / "tensorpar_plan_cli").string();
  std::filesystem::create_directories(dir);
  return dir;
}

const std::string kModel = "plan --layers 2 --hidden 128 --heads 4 --seq 128 --vocab 256 --global-batch 32 "
                           "--hosts 2 --ranks-per-host 2 --inter-bw 100mbit --intra-bw 10GB/s --gflops 10 ";

TEST(PlanCommand, ListsEveryLayoutAndRecommendsOne) {
  const auto r = run_cli(1, kModel + "--memory-per-host 2GiB --json", scratch());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.last_line());
  ASSERT_EQ(j["layouts"].size(), 3u);
  EXPECT_EQ(j["layouts"][0]["tp"], 1);
  EXPECT_EQ(j["layouts"][2]["tp"], 4);
  EXPECT_EQ(j["layouts"][2]["tp_crosses_hosts"], true);
  EXPECT_EQ(j["layouts"][1]["tp_crosses_hosts"], false);
  for (const auto& l : j["layouts"]) EXPECT_EQ(l["fits"], true);
  // at 100mbit between hosts, TP across them is the slowest; TP=4's 13 all-reduces of 4 MB cross
  EXPECT_LT(j["layouts"][2]["tokens_per_s"].get<double>(), j["layouts"][1]["tokens_per_s"].get<double>());
  ASSERT_FALSE(j["recommended"].is_null());
  EXPECT_NE(j["recommended"]["tp"], 4);

  const auto tight = run_cli(1, kModel + "--memory-per-host 10MiB", scratch());
  ASSERT_EQ(tight.exit_code, 0) << tight.err;
  EXPECT_NE(tight.out.find("NO"), std::string::npos) << tight.out;
  EXPECT_NE(tight.out.find("no valid layout fits"), std::string::npos) << tight.out;
}

TEST(PlanCommand, BadInputIsOneErrorLine) {
  for (const std::string& bad : {std::string("--inter-bw fast"), std::string("--memory-per-host lots"),
                                 std::string("--heads 3")}) {
    for (int ranks : {1, 2}) {
      const auto r = run_cli(ranks, kModel + bad, scratch());
      EXPECT_NE(r.exit_code, 0) << bad;
      EXPECT_EQ(r.error_lines(), 1) << bad << ": " << r.err;
    }
  }
}

}  // namespace
}  // namespace tensorpar
