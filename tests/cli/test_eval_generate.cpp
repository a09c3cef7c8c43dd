// `tensorpar eval` and `generate` end to end under mpirun: a Llama with 2 KV heads trained at 2 ranks
// gives the same eval loss at 1 and 4 ranks (at 4 its KV heads are replicated), the same greedy
// tokens with the KV cache at 1, 2 and 4 ranks; bad input ends with one error line and a non-zero
// exit on every rank, never a hang.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "cli/cli_runner.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

class EvalGenerate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(fs::temp_directory_path() / ("tensorpar_cli_infer_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    std::ofstream(path("text.txt")) << std::string(40, ' ') + "It was the best of times, it was the worst of times.\n"
                                    << "It was the age of wisdom, it was the age of foolishness.\n";
    trained_ = new testing::CliResult(run_cli(
        2,
        "train --data " + path("text.txt") + " --family llama --layers 2 --hidden 32 --heads 4 --kv-heads 2 --ffn 64" +
            " --seq 16 --batch 2 --steps 4 --lr 3e-3 --warmup 1 --val-fraction 0 --seed 3 --json --out " + path("model"),
        *dir_));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete trained_;
  }
  static std::string path(const std::string& name) { return *dir_ + "/" + name; }
  static std::string* dir_;
  static testing::CliResult* trained_;
};
std::string* EvalGenerate::dir_ = nullptr;
testing::CliResult* EvalGenerate::trained_ = nullptr;

TEST_F(EvalGenerate, SameLossAtOneAndFourRanksAndSameGreedyTokensAtOneTwoFour) {
  ASSERT_EQ(trained_->exit_code, 0) << trained_->err;
  const std::string eval = "eval --model " + path("model") + " --data " + path("text.txt") + " --batch 3 --seq 16 --json";
  const auto e1 = run_cli(1, eval, *dir_), e4 = run_cli(4, eval, *dir_);
  ASSERT_EQ(e1.exit_code, 0) << e1.err;
  ASSERT_EQ(e4.exit_code, 0) << e4.err;
  const auto j1 = nlohmann::json::parse(e1.last_line()), j4 = nlohmann::json::parse(e4.last_line());
  const double l1 = j1.at("loss"), l4 = j4.at("loss");
  EXPECT_NEAR(l4, l1, 1e-5 * l1);
  EXPECT_NEAR(double(j1.at("perplexity")), std::exp(l1), 1e-6 * std::exp(l1));
  EXPECT_LT(l1, std::log(256.0)) << "trained a little: better than uniform";

  const std::string generate = "generate --model " + path("model") + " --prompt 'It was' --max-new-tokens 12 --temperature 0 --json";
  std::vector<int32_t> tokens[3];
  int i = 0;
  for (int ranks : {1, 2, 4}) {
    const auto g = run_cli(ranks, generate, *dir_);
    ASSERT_EQ(g.exit_code, 0) << g.err;
    const auto j = nlohmann::json::parse(g.last_line());
    tokens[i++] = j.at("tokens").get<std::vector<int32_t>>();
    EXPECT_EQ(tokens[i - 1].size(), 12u);
    EXPECT_TRUE(j.at("text").is_string());
    EXPECT_GT(double(j.at("tokens_per_s")), 0.0);
  }
  EXPECT_EQ(tokens[1], tokens[0]) << "TP=2";
  EXPECT_EQ(tokens[2], tokens[0]) << "TP=4";
  // the same prompt as ids (byte-level: 'I' = 73, 't' = 116, ...)
  const auto ids = run_cli(1, "generate --model " + path("model") + " --prompt-ids 73,116,32,119,97,115 -n 12 --json", *dir_);
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(nlohmann::json::parse(ids.last_line()).at("tokens").get<std::vector<int32_t>>(), tokens[0]);
}

struct BadInput {
  const char* name;
  int ranks;
  const char* args;  // {model} and {data} are replaced
  const char* message;
};

class EvalGenerateBadInput : public EvalGenerate, public ::testing::WithParamInterface<BadInput> {};

TEST_P(EvalGenerateBadInput, OneErrorLineAndNonZeroExitOnEveryRank) {
  ASSERT_EQ(trained_->exit_code, 0) << trained_->err;
  const BadInput& bad = GetParam();
  const std::string name = bad.name;
  std::string model = path("model");
  if (name == "truncated_checkpoint" || name == "heads_not_divisible") {
    model = path(name);
    fs::create_directories(model);
    fs::copy_file(path("model/config.json"), model + "/config.json", fs::copy_options::overwrite_existing);
    std::ifstream in(path("model/model.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(model + "/model.safetensors", std::ios::binary)
        << (name == "truncated_checkpoint" ? bytes.substr(0, bytes.size() - 100) : bytes);
  }
  std::string args = bad.args;
  for (auto [key, value] : {std::pair<std::string, std::string>{"{model}", model}, {"{data}", path("text.txt")}})
    for (size_t at; (at = args.find(key)) != std::string::npos;) args.replace(at, key.size(), value);
  const auto r = run_cli(bad.ranks, args, *dir_);
  EXPECT_NE(r.exit_code, 0) << "exit code " << r.exit_code;
  EXPECT_NE(r.exit_code, 124) << "timed out: a rank hung";
  EXPECT_EQ(r.error_lines(), 1) << r.err;
  EXPECT_NE(r.err.find(bad.message), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, EvalGenerateBadInput,
    ::testing::Values(
        BadInput{"truncated_checkpoint", 2, "eval --model {model} --data {data} --batch 1 --seq 8", "model.safetensors"},
        BadInput{"heads_not_divisible", 3, "eval --model {model} --data {data} --batch 1 --seq 8", "cannot be split over 3"},
        BadInput{"data_too_short", 2, "eval --model {model} --data {data} --batch 100 --seq 16", "needs 1601"},
        BadInput{"token_outside_vocab", 2, "generate --model {model} --prompt-ids 5,999", "outside the model's vocabulary"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tensorpar
