// Hugging Face checkpoints: saved at the world's TP degree, loaded at TP=1 and at the same degree,
// bit-exact weights, equal loss, GPT-2's Conv1D layout, bit-exact load -> save round trip, and
// clear errors for broken files on every rank.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "temp_dir.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace tensorpar {
namespace {

ModelConfig tiny(ModelFamily family) { return testing::tiny_config(family); }

std::vector<int32_t> batch(uint32_t seed) { return testing::random_tokens(seed, 12); }

void expect_same_parameters(const TransformerLM& a, const TransformerLM& b) {
  ASSERT_EQ(a.parameters().size(), b.parameters().size());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const Parameter& p = *a.parameters()[i];
    const Parameter& q = *b.parameters()[i];
    ASSERT_EQ(p.value.numel(), q.value.numel()) << p.name;
    EXPECT_EQ(std::memcmp(p.value.raw(), q.value.raw(), p.value.nbytes()), 0) << p.name << " differs";
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class CheckpointTest : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(CheckpointTest, SavedAtAnyDegreeLoadsAtOneAndBackBitExact) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  const ModelConfig config = tiny(GetParam());
  TransformerLM saved(world, config, 2, 6, 5), reference(self, config, 2, 6, 5);
  io::save_hf_checkpoint(world, saved, dir.path("a"));

  TransformerLM at_one(self, config, 2, 6, 999), at_world(world, config, 2, 6, 999);
  io::load_hf_checkpoint(self, at_one, dir.path("a"));
  io::load_hf_checkpoint(world, at_world, dir.path("a"));
  expect_same_parameters(at_one, reference);
  expect_same_parameters(at_world, saved);

  const auto x = batch(1), y = batch(2);
  const float loss = saved.forward(x.data(), y.data(), 2, 6);
  EXPECT_NEAR(at_one.forward(x.data(), y.data(), 2, 6), loss, 1e-5 * loss);
  EXPECT_NEAR(at_world.forward(x.data(), y.data(), 2, 6), loss, 1e-5 * loss);

  io::save_hf_checkpoint(self, at_one, dir.path("b"));  // load -> save at another degree
  world.barrier();
  EXPECT_EQ(read_bytes(dir.path("a/model.safetensors")), read_bytes(dir.path("b/model.safetensors")));
  EXPECT_EQ(io::read_model_config(dir.path("b")).hidden, config.hidden);
}

INSTANTIATE_TEST_SUITE_P(Families, CheckpointTest, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

TEST(Checkpoint, Gpt2UsesHuggingFaceNamesAndConv1DLayout) {
  ProcessGroup world = ProcessGroup::world(), self = ProcessGroup::self();
  testing::SharedTempDir dir(world);
  const ModelConfig config = tiny(ModelFamily::Gpt2);
  TransformerLM model(world, config, 1, 4, 3), reference(self, config, 1, 4, 3);
  io::save_hf_checkpoint(world, model, dir.path());
  const auto file = io::SafetensorsFile::open(dir.path("model.safetensors"));
  EXPECT_EQ(file.info("wte.weight").shape, (std::vector<int64_t>{300, 24})) << "vocabulary padding is not saved";
  EXPECT_EQ(file.info("wpe.weight").shape, (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(file.info("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{24, 72}));  // Conv1D [in, 3*hidden]
  EXPECT_EQ(file.info("h.0.mlp.c_proj.weight").shape, (std::vector<int64_t>{96, 24}));
  EXPECT_TRUE(file.contains("ln_f.bias"));
  EXPECT_FALSE(file.contains("lm_head.weight")) << "tied to wte";
  // file[i][j] of a Conv1D weight is our [out, in] weight's (j, i)
  std::vector<float> c_attn(24 * 72);
  file.read_block("h.1.attn.c_attn.weight", 0, 24, 0, 72, c_attn.data(), 72);
  const Parameter& w = reference.parameter("h.1.attn.c_attn.weight");
  for (int64_t i = 0; i < 24; ++i)
    for (int64_t j = 0; j < 72; ++j) ASSERT_EQ(c_attn[size_t(i * 72 + j)], w.value.f32()[j * 24 + i]) << i << "," << j;
}

TEST(Checkpoint, BrokenFilesGiveTheSameErrorNamingFileAndKeyOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  testing::SharedTempDir dir(world);
  const ModelConfig config = tiny(ModelFamily::Gpt2);
  TransformerLM model(world, config, 1, 4, 3);
  io::save_hf_checkpoint(world, model, dir.path("ok"));
  // a config whose hidden size disagrees with the tensors
  if (world.rank() == 0) {
    std::filesystem::create_directories(dir.path("bad"));
    std::filesystem::copy_file(dir.path("ok/model.safetensors"), dir.path("bad/model.safetensors"));
    ModelConfig wrong = config;
    wrong.ffn_hidden = 48;
    std::ofstream(dir.path("bad/config.json")) << wrong.to_hf_json().dump();
  }
  world.barrier();
  ModelConfig wrong = config;
  wrong.ffn_hidden = 48;
  TransformerLM mismatched(world, wrong, 1, 4, 3);
  try {
    io::load_hf_checkpoint(world, mismatched, dir.path("bad"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model.safetensors"), std::string::npos) << what;
    EXPECT_NE(what.find("h.0.mlp.c_fc.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("shape"), std::string::npos) << what;
  }
  // a missing directory
  EXPECT_THROW(io::load_hf_checkpoint(world, model, dir.path("missing")), IoError);
  // a truncated file
  if (world.rank() == 0) {
    std::filesystem::create_directories(dir.path("cut"));
    const std::string bytes = read_bytes(dir.path("ok/model.safetensors"));
    std::ofstream(dir.path("cut/model.safetensors"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  world.barrier();
  EXPECT_THROW(io::load_hf_checkpoint(world, model, dir.path("cut")), IoError);
}

}  // namespace
}  // namespace tensorpar
