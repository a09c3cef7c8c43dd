// Every number from a flag, config.json, safetensors header or index file is checked before use:
// sizes that overflow int64 (--vocab 2^59 and batch x seq ended in SIGSEGV), sizes beyond this
// machine's memory, NaN/negative/zero hyper-parameters (--lr nan trained to NaN with exit 0), ids
// beyond the vocabulary or 32 bits, config.json values of the wrong type or range, safetensors data
// sections with bytes that belong to no tensor (a one-byte shift read every weight wrong), index
// files with escaping paths or a tensor mapped twice, and shape flags that contradict --init. Each
// ends with exactly one error line and a non-zero exit on every rank, never a hang or a signal.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/cli_runner.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

class UntrustedInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(fs::temp_directory_path() / ("tensorpar_cli_untrusted_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    std::ofstream text(path("text.txt"));
    for (int i = 0; i < 100; ++i) text << "It was the best of times, it was the worst of times; line " << i << ".\n";
    text.close();
    // one byte beyond a vocabulary of 128 in the rows only data-parallel rank 1 reads at step 3 (batch
    // 2 x seq 16 x 2 ranks: step 3 is tokens [192, 257), rank 1's rows [224, 257))
    std::string dp(500, 'a');
    dp[240] = char(0xc3);
    spit(path("dp.txt"), dp);
    trained_ = new testing::CliResult(run_cli(1,
                                              "train --data " + path("text.txt") +
                                                  " --layers 2 --hidden 32 --heads 4 --seq 16 --batch 2 --steps 2"
                                                  " --val-fraction 0 --json --out " + path("model"),
                                              *dir_));
    if (trained_->exit_code != 0) return;
    const std::string weights = slurp(path("model/model.safetensors")), config = slurp(path("model/config.json"));
    uint64_t header = 0;
    std::memcpy(&header, weights.data(), 8);
    // model directories each broken in one way
    auto make = [&](const std::string& name, const std::string& w, const std::string& c) {
      fs::create_directories(path(name));
      spit(path(name + "/model.safetensors"), w);
      spit(path(name + "/config.json"), c);
    };
    std::string shifted = weights;
    shifted.insert(size_t(8 + header), 1, '\0');
    make("shifted", shifted, config);
    make("oversized", weights + std::string(4, '\0'), config);
    auto config_with = [&](const std::string& key, const nlohmann::json& value) {
      nlohmann::json j = nlohmann::json::parse(config);
      if (value.is_null()) j.erase(key);
      else j[key] = value;
      return j.dump();
    };
    make("cfg_vocab_huge", weights, config_with("vocab_size", int64_t(1) << 59));
    make("cfg_layers_float", weights, config_with("n_layer", 2.5));
    make("cfg_heads_negative", weights, config_with("n_head", -4));
    make("cfg_activation", weights, config_with("activation_function", "relu"));
    make("cfg_missing", weights, config_with("n_embd", nullptr));
    make("cfg_eps_string", weights, config_with("layer_norm_epsilon", "tiny"));
    make("cfg_duplicate", weights, "{\"vocab_size\": 256, " + config.substr(1));
    // sharded: an index naming a shard outside the directory, and one mapping a tensor twice
    fs::create_directories(path("idx_escape"));
    spit(path("idx_escape/config.json"), config);
    spit(path("idx_escape/model.safetensors.index.json"),
         R"({"weight_map": {"wte.weight": "../model/model.safetensors"}})");
    fs::create_directories(path("idx_twice"));
    spit(path("idx_twice/config.json"), config);
    spit(path("idx_twice/model-00001-of-00001.safetensors"), weights);
    spit(path("idx_twice/model.safetensors.index.json"),
         R"({"weight_map": {"wte.weight": "model-00001-of-00001.safetensors", "wte.weight": "model-00001-of-00001.safetensors"}})");
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
std::string* UntrustedInput::dir_ = nullptr;
testing::CliResult* UntrustedInput::trained_ = nullptr;

struct Case {
  const char* name;
  const char* args;     // {D} is the scratch directory
  const char* message;  // expected in the one error line
};

// A valid training command; a case's flags come after it and win.
constexpr const char* kTrain =
    "train --data {D}/text.txt --layers 2 --hidden 32 --heads 4 --seq 16 --batch 2 --steps 2 --val-fraction 0 ";
constexpr const char* kEval = "eval --data {D}/text.txt --batch 2 --seq 16 --model ";

const Case kCases[] = {
    // sizes from flags that overflow or cannot fit (SIGSEGV before)
    {"vocab_2_pow_59", "T --vocab 576460752303423488", "vocab size 576460752303423488 is out of range"},
    {"batch_times_seq_overflows", "T --batch 4611686018427387904 --seq 4", "overflows 64 bits"},
    {"batch_beyond_memory", "T --batch 200000000", "GB but this machine has"},
    {"layers_beyond_memory", "T --layers 2000000 --hidden 4096 --heads 32", "GB but this machine has"},
    {"eval_batch_overflows", "E{D}/model --batch 4611686018427387904 --seq 4", "overflows 64 bits"},
    {"samples_beyond_memory", "sample --model {D}/model --samples 100000000000", "GB but this machine has"},
    // non-finite, negative, zero hyper-parameters (--lr nan trained to NaN with exit 0 before)
    {"lr_nan", "T --lr nan", "--lr nan is out of range"},
    {"lr_inf", "T --lr inf", "--lr inf is out of range"},
    {"lr_negative", "T --lr=-0.001", "--lr -0.001 is out of range"},
    {"lr_zero", "T --lr 0", "--lr must be positive"},
    {"beta1_nan", "T --beta1 nan", "--beta1 nan is out of range"},
    {"beta2_one", "T --beta2 1", "--beta2 1 is out of range"},
    {"eps_zero", "T --eps 0", "--eps must be positive"},
    {"eps_nan", "T --eps nan", "--eps nan"},
    {"weight_decay_nan", "T --weight-decay nan", "--weight-decay nan"},
    {"weight_decay_negative", "T --weight-decay=-1", "--weight-decay -1"},
    {"grad_clip_nan", "T --grad-clip nan", "--grad-clip nan"},
    {"grad_clip_negative", "T --grad-clip=-1", "--grad-clip -1"},
    {"min_lr_ratio", "T --min-lr-ratio 2", "--min-lr-ratio 2"},
    {"val_fraction_one", "T --val-fraction 1", "--val-fraction 1"},
    {"warmup_negative", "T --warmup=-3", "--warmup must not be negative"},
    {"steps_zero", "T --steps 0", "--steps must be at least 1"},
    {"batch_zero", "T --batch 0", "--batch must be at least 1"},
    {"seq_negative", "T --seq=-16", "--seq must be at least 1"},
    {"grad_accum_zero", "T --grad-accum 0", "--grad-accum must be at least 1"},
    {"val_batches_zero", "T --val-batches 0", "--val-batches must be at least 1"},
    {"val_every_negative", "T --val-every=-1", "--val-every"},
    {"vocab_negative", "T --vocab=-5", "--vocab must be positive"},
    {"layers_zero", "T --layers 0", "layers size 0 is out of range"},
    {"hidden_negative", "T --hidden=-32", "hidden size -32 is out of range"},
    {"kv_heads_negative", "T --kv-heads=-1", "key/value heads -1 is out of range"},
    {"ffn_negative", "T --ffn=-8", "MLP size -8 is out of range"},
    {"tp_negative", "T --tp=-1", "--tp must be positive"},
    // token ids beyond the vocabulary, found by the batch that reads them
    {"token_beyond_vocab", "T --vocab 100", "text.txt: token 1"},
    // in one data-parallel rank's rows only: every rank checks the whole step, so all fail together
    // (no rank left waiting in a collective, no MPI_Abort)
    {"token_beyond_vocab_one_dp_rank", "T --data {D}/dp.txt --tp 1 --vocab 128 --steps 6",
     "dp.txt: token 195 at position 240 of this file is outside the model's vocabulary of 128"},
    {"prompt_id_beyond_32_bits", "generate --model {D}/model --prompt-ids 1,4294967297", "4294967297 is outside [0, 2^31-1]"},
    {"prompt_id_beyond_vocab", "generate --model {D}/model --prompt-ids 1,300", "prompt token 300 is outside the model's vocabulary of 256"},
    {"temperature_nan", "generate --model {D}/model --prompt-ids 1 --temperature nan", "--temperature must be a finite number"},
    {"top_p_zero", "sample --model {D}/model --top-p 0", "--top-p must be in (0, 1]"},
    {"top_k_negative", "generate --model {D}/model --prompt-ids 1 --top-k=-1", "--top-k must be >= 0"},
    {"bench_batch_negative", "bench --steps 1 --warmup 0 --batch=-4", "--batch must be positive"},
    // shape flags contradicting --init are refused before the model is built
    {"init_layers_conflict", "T --init {D}/model --layers 3", "--layers 3 conflicts with the checkpoint's 2"},
    {"init_family_conflict", "T --init {D}/model --family llama", "--family llama conflicts with the gpt2 model"},
    // safetensors data sections with bytes that belong to no tensor
    {"safetensors_shifted", "E{D}/shifted", "bytes belong to no tensor"},
    {"safetensors_oversized", "E{D}/oversized", "4 bytes belong to no tensor"},
    // config.json values of the wrong type or range, unknown strings, missing and duplicate keys
    {"config_vocab_huge", "E{D}/cfg_vocab_huge", "vocab size 576460752303423488 is out of range"},
    {"config_layers_float", "E{D}/cfg_layers_float", "key 'n_layer' is 2.5, not an integer"},
    {"config_heads_negative", "E{D}/cfg_heads_negative", "heads size -4 is out of range"},
    {"config_activation", "E{D}/cfg_activation", "activation_function 'relu' is not supported"},
    {"config_missing_key", "E{D}/cfg_missing", "missing key 'n_embd'"},
    {"config_eps_string", "E{D}/cfg_eps_string", "key 'layer_norm_epsilon' is \"tiny\", not a number"},
    {"config_duplicate_key", "E{D}/cfg_duplicate", "key 'vocab_size' appears twice"},
    // sharded index files
    {"index_escapes_directory", "E{D}/idx_escape", "not a plain file name in the same directory"},
    {"index_maps_tensor_twice", "E{D}/idx_twice", "key 'wte.weight' appears twice"},
};

class UntrustedInputCase : public UntrustedInput, public ::testing::WithParamInterface<Case> {};

std::string expand(const std::string& args, const std::string& dir) {
  std::string out = args;
  if (out.rfind("T ", 0) == 0) out = kTrain + out.substr(2);
  if (out.rfind("E", 0) == 0) out = kEval + out.substr(1);
  for (size_t p; (p = out.find("{D}")) != std::string::npos;) out.replace(p, 3, dir);
  return out;
}

TEST_P(UntrustedInputCase, OneErrorLineAndNonZeroExitOnEveryRank) {
  ASSERT_EQ(trained_->exit_code, 0) << trained_->err;
  const Case& c = GetParam();
  const auto r = run_cli(2, expand(c.args, *dir_), *dir_);
  EXPECT_EQ(r.exit_code, 1) << "exit code " << r.exit_code << " (124: a hang, -1: a signal)\n" << r.err;
  EXPECT_EQ(r.error_lines(), 1) << r.err;
  EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("MPI_ABORT"), std::string::npos) << "every rank must find the error, not one\n" << r.err;
}

INSTANTIATE_TEST_SUITE_P(Cases, UntrustedInputCase, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// Flags given with --init that agree with the checkpoint are fine; a huge --max-new-tokens is not an
// overflow but "as many as the positions allow".
TEST_F(UntrustedInput, ValidEdgesStillWork) {
  ASSERT_EQ(trained_->exit_code, 0) << trained_->err;
  const auto init = run_cli(2, expand(std::string("T --init {D}/model --layers 2 --hidden 32 --vocab 256"), *dir_), *dir_);
  EXPECT_EQ(init.exit_code, 0) << init.err;
  const auto gen = run_cli(1, "generate --model " + path("model") + " --prompt-ids 1,2 --max-new-tokens 9223372036854775807 --json", *dir_);
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(nlohmann::json::parse(gen.last_line()).at("tokens").size(), 256u - 2 + 1) << "up to the 256 positions";
}

}  // namespace
}  // namespace tensorpar
