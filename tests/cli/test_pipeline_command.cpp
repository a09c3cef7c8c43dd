// `tensorpar train --pp` end to end under mpirun: a model trained and saved at (T, P, D) = (2, 2, 1)
// is an ordinary Hugging Face directory: it generates the same greedy tokens at (1, 1, 1) and
// (4, 1, 1), and the same as the model trained by one process (GPT-2: tied embeddings, whose copy
// on the last stage is not written twice; Llama: the last stage's own head). Bad pipeline layouts
// end with one error line and a non-zero exit on every rank. Generation runs on a pipeline too:
// (1,3,1) and (2,2,1) give the same tokens.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "cli/cli_runner.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

class PipelineCommand : public testing::ScratchTextTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(PipelineCommand, ModelSavedAtTwoTwoOneGeneratesTheSameAtOneAndFourRanks) {
  const std::string family = GetParam();
  const std::string train = "train --data " + path("text.txt") + " --family " + family +
                            " --layers 3 --hidden 32 --heads 4 --seq 16 --batch 2 --grad-accum 3 --steps 4 --lr 3e-3"
                            " --warmup 1 --val-fraction 0 --seed 5 --json --out ";
  const auto piped = run_cli(4, train + path(family + "_pp") + " --tp 2 --pp 2", dir_);
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_NE(piped.err.find("pipeline: 2 stages (stage 0: layers 0-1 + embedding, stage 1: layers 2-2 + final norm, "
                           "LM head)"),
            std::string::npos)
      << piped.err;
  const auto serial = run_cli(1, train + path(family + "_serial"), dir_);
  ASSERT_EQ(serial.exit_code, 0) << serial.err;
  const double l_pp = nlohmann::json::parse(piped.last_line()).at("loss");
  const double l_serial = nlohmann::json::parse(serial.last_line()).at("loss");
  EXPECT_NEAR(l_pp, l_serial, 1e-5 * l_serial);

  const auto generate = [&](int ranks, const std::string& model, const std::string& extra = "") {
    const auto g = run_cli(
        ranks, "generate --model " + path(model) + " --prompt 'It was' -n 12 --temperature 0 --json " + extra, dir_);
    EXPECT_EQ(g.exit_code, 0) << g.err;
    if (g.exit_code != 0) return std::vector<int32_t>{};
    return nlohmann::json::parse(g.last_line()).at("tokens").get<std::vector<int32_t>>();
  };
  const std::vector<int32_t> at1 = generate(1, family + "_pp"), at4 = generate(4, family + "_pp");
  EXPECT_EQ(at1.size(), 12u);
  EXPECT_EQ(at4, at1) << "TP=4";
  EXPECT_EQ(generate(1, family + "_serial"), at1) << "trained by one process";
  // generation on a pipeline: stages pass the hidden state, each caches its own layers
  EXPECT_EQ(generate(3, family + "_pp", "--pp 3"), at1) << "(1,3,1)";
  EXPECT_EQ(generate(4, family + "_pp", "--pp 2"), at1) << "(2,2,1)";
}

INSTANTIATE_TEST_SUITE_P(Families, PipelineCommand, ::testing::Values("gpt2", "llama"),
                         [](const auto& info) { return std::string(info.param); });

struct BadLayout {
  const char* name;
  int ranks;
  const char* args;
  const char* message;
};

class PipelineCommandBadInput : public testing::ScratchTextTest, public ::testing::WithParamInterface<BadLayout> {};

TEST_P(PipelineCommandBadInput, OneErrorLineAndNonZeroExitOnEveryRank) {
  const BadLayout& bad = GetParam();
  const auto r = run_cli(bad.ranks,
                         "train --data " + path("text.txt") + " --layers 2 --hidden 32 --heads 4 --seq 16 --batch 2 "
                         "--steps 1 --out " + path(bad.name) + " " + bad.args,
                         dir_);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "timed out: a rank hung";
  EXPECT_EQ(r.error_lines(), 1) << r.err;
  EXPECT_NE(r.err.find(bad.message), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PipelineCommandBadInput,
    ::testing::Values(BadLayout{"stages_not_dividing", 4, "--pp 3", "does not divide the 4 MPI ranks"},
                      BadLayout{"tp_times_pp_not_dividing", 4, "--tp 4 --pp 2", "does not divide the 4 MPI ranks"},
                      BadLayout{"more_stages_than_layers", 4, "--pp 4", "at least one layer per stage"},
                      BadLayout{"zero_stages", 2, "--pp 0", "--pp must be at least 1"},
                      BadLayout{"negative_stages", 2, "--pp -2", "--pp must be at least 1"},
                      BadLayout{"unknown_schedule", 2, "--pp 2 --pp-schedule zb", "--pp-schedule"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tensorpar
