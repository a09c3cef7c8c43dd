// Checkpoints as Hugging Face also ships them: BF16 or F16 tensors, and sharded files
// (model-0000x-of-0000y.safetensors + model.safetensors.index.json). Written here with HF key names
// from a model saved in F32, loaded at the world's TP degree (GQA KV heads replicated at 4 ranks),
// every weight equal to the F32 value rounded to nearest-even in that dtype (computed here
// independently), and the model runs.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "random_weights.hpp"
#include "temp_dir.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

namespace fs = std::filesystem;

float round_bf16(float x) {
  uint32_t u = std::bit_cast<uint32_t>(x);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xFFFF0000u);
}
float round_f16(float x) { return float(_Float16(x)); }

ModelConfig config_for(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = 300;
  c.max_seq = 8;
  c.hidden = 32;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = family == ModelFamily::Llama ? 2 : 0;
  c.ffn_hidden = family == ModelFamily::Llama ? 48 : 0;
  c.tie_embeddings = family == ModelFamily::Gpt2;
  return c;
}

// Rank 0 rewrites dir/f32 as dir/<out> in `dtype`, split over `shards` files (1: model.safetensors).
void convert(const std::string& dir, const std::string& out, io::StDType dtype, int shards) {
  const auto f32 = io::SafetensorsFile::open(dir + "/f32/model.safetensors");
  fs::create_directories(dir + "/" + out);
  fs::copy_file(dir + "/f32/config.json", dir + "/" + out + "/config.json");
  const auto names = f32.names();
  std::vector<std::vector<io::StTensorData>> files(static_cast<size_t>(shards));
  std::vector<std::vector<std::byte>> bytes;
  bytes.reserve(names.size());
  nlohmann::json weight_map;
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& info = f32.info(names[i]);
    int64_t n = 1;
    for (int64_t d : info.shape) n *= d;
    const int64_t rows = info.shape.size() > 1 ? info.shape[0] : 1;
    std::vector<float> v(static_cast<size_t>(n));
    f32.read_block(names[i], 0, rows, 0, n / rows, v.data(), n / rows);
    bytes.push_back(io::encode_floats(v, dtype));
    const size_t shard = i * size_t(shards) / names.size();
    files[shard].push_back({names[i], dtype, info.shape, bytes.back()});
    weight_map[names[i]] = fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, shards);
  }
  if (shards == 1) {
    io::write_safetensors(dir + "/" + out + "/model.safetensors", files[0], {{"format", "pt"}});
    return;
  }
  for (int s = 0; s < shards; ++s)
    io::write_safetensors(dir + "/" + out + fmt::format("/model-{:05d}-of-{:05d}.safetensors", s + 1, shards),
                          files[size_t(s)], {{"format", "pt"}});
  std::ofstream(dir + "/" + out + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2);
}

class HfDtypes : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(HfDtypes, Bf16F16AndShardedCheckpointsLoadRoundedAtAnyDegree) {
  ProcessGroup world = ProcessGroup::world();
  const ModelConfig config = config_for(GetParam());
  TransformerLM original(world, config, 1, 8, 1);
  testing::randomize_weights(original, 3);
  testing::SharedTempDir dir(world);
  io::save_hf_checkpoint(world, original, dir.path("f32"));
  if (world.rank() == 0) {
    convert(dir.path(), "bf16", io::StDType::BF16, 1);
    convert(dir.path(), "f16_sharded", io::StDType::F16, 3);
    convert(dir.path(), "f32_sharded", io::StDType::F32, 2);
  }
  world.barrier();
  struct Variant {
    const char* dir;
    float (*round)(float);
  };
  for (const Variant& v : {Variant{"bf16", round_bf16}, Variant{"f16_sharded", round_f16},
                           Variant{"f32_sharded", [](float x) { return x; }}}) {
    SCOPED_TRACE(v.dir);
    TransformerLM loaded(world, config, 1, 8, 77);
    io::load_hf_checkpoint(world, loaded, dir.path(v.dir));
    for (size_t i = 0; i < loaded.parameters().size(); ++i) {
      const Parameter& p = *loaded.parameters()[i];
      std::vector<float> expected(p.value.span().begin(), p.value.span().end());
      const auto src = original.parameters()[i]->value.span();
      for (size_t k = 0; k < expected.size(); ++k) expected[k] = v.round(src[k]);
      EXPECT_TRUE(testing::all_close(p.value.span(), expected, 0, 0)) << p.name;
    }
    const std::vector<int32_t> x = {1, 2, 3, 4, 5, 6}, y = {2, 3, 4, 5, 6, 7};
    const float loss = loaded.forward(x.data(), y.data(), 1, 6);
    EXPECT_TRUE(std::isfinite(loss));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfDtypes, ::testing::Values(ModelFamily::Gpt2, ModelFamily::Llama),
                         [](const auto& info) { return info.param == ModelFamily::Gpt2 ? "Gpt2" : "Llama"; });

}  // namespace
}  // namespace tensorpar
