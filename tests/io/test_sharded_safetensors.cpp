// Sharded checkpoints: an index with two shards resolves every tensor to its shard; a single
// model.safetensors works the same; missing shards, tensors and index keys give IoError.
#include "tensorpar/io/sharded_safetensors.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::TempDir;

void write_shard(const std::string& path, const std::vector<std::pair<std::string, float>>& tensors) {
  std::vector<std::vector<std::byte>> bytes;
  std::vector<StTensorData> data;
  for (const auto& [name, v] : tensors) bytes.push_back(encode_floats(std::vector<float>{v, v + 1}, StDType::F32));
  for (size_t i = 0; i < tensors.size(); ++i) data.push_back({tensors[i].first, StDType::F32, {2}, bytes[i]});
  write_safetensors(path, data);
}

const char* kIndex = R"({"metadata": {"total_size": 32},
  "weight_map": {"wte.weight": "model-00001-of-00002.safetensors", "h.0.ln_1.weight": "model-00001-of-00002.safetensors",
                 "h.1.ln_1.weight": "model-00002-of-00002.safetensors", "ln_f.weight": "model-00002-of-00002.safetensors"}})";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  }
  return "(no IoError)";
}

TEST(ShardedSafetensors, IndexFindsEachShard) {
  TempDir dir;
  write_shard(dir.file("model-00001-of-00002.safetensors"), {{"wte.weight", 1}, {"h.0.ln_1.weight", 3}});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"h.1.ln_1.weight", 5}, {"ln_f.weight", 7}});
  dir.write("model.safetensors.index.json", kIndex);
  const auto c = CheckpointFiles::open_dir(dir.path().string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"h.0.ln_1.weight", "h.1.ln_1.weight", "ln_f.weight", "wte.weight"}));
  const std::map<std::string, std::pair<std::string, float>> want = {
      {"wte.weight", {"model-00001-of-00002.safetensors", 1}}, {"h.0.ln_1.weight", {"model-00001-of-00002.safetensors", 3}},
      {"h.1.ln_1.weight", {"model-00002-of-00002.safetensors", 5}}, {"ln_f.weight", {"model-00002-of-00002.safetensors", 7}}};
  for (const auto& [name, where] : want) {
    ASSERT_TRUE(c.contains(name));
    const SafetensorsFile& f = c.file_for(name);
    EXPECT_EQ(std::filesystem::path(f.path()).filename(), where.first) << name;
    float v[2];
    f.read_block(name, 0, 1, 0, 2, v, 2);
    EXPECT_EQ(v[0], where.second) << name;
    EXPECT_EQ(v[1], where.second + 1) << name;
  }
  EXPECT_FALSE(c.contains("lm_head.weight"));
  const std::string msg = error_of([&] { c.file_for("lm_head.weight"); });
  EXPECT_NE(msg.find(dir.path().string() + ": missing tensor 'lm_head.weight'"), std::string::npos) << msg;
}

TEST(ShardedSafetensors, SingleFile) {
  TempDir dir;
  write_shard(dir.file("model.safetensors"), {{"a", 1}, {"b", 2}});
  const auto c = CheckpointFiles::open_dir(dir.path().string());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.file_for("b").contains("b"));
  EXPECT_THROW(c.file_for("c"), IoError);
}

TEST(ShardedSafetensors, ErrorsNameTheFile) {
  TempDir dir;
  std::string msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("neither model.safetensors nor model.safetensors.index.json"), std::string::npos) << msg;

  write_shard(dir.file("model-00001-of-00002.safetensors"), {{"wte.weight", 1}, {"h.0.ln_1.weight", 3}});
  dir.write("model.safetensors.index.json", kIndex);
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("model-00002-of-00002.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

  // The shard exists but lacks a tensor the index maps to it.
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"h.1.ln_1.weight", 5}});
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("missing tensor 'ln_f.weight'"), std::string::npos) << msg;

  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  dir.write("model.safetensors.index.json", R"({"weight_map": {"a": "../x.safetensors"}})");
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << msg;
  for (const char* bad : {"/etc/x.safetensors", "..", ".", "sub/x.safetensors", ""}) {
    dir.write("model.safetensors.index.json", std::string(R"({"weight_map": {"a": ")") + bad + R"("}})");
    msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
    EXPECT_NE(msg.find("not a plain file name"), std::string::npos) << bad << ": " << msg;
  }
  // a tensor mapped twice (nlohmann alone would keep the last one silently)
  dir.write("model.safetensors.index.json",
            R"({"weight_map": {"wte.weight": "model-00001-of-00002.safetensors", "wte.weight": "model-00002-of-00002.safetensors"}})");
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("key 'wte.weight' appears twice"), std::string::npos) << msg;
  dir.write("model.safetensors.index.json", "{oops");
  msg = error_of([&] { CheckpointFiles::open_dir(dir.path().string()); });
  EXPECT_NE(msg.find("model.safetensors.index.json: not valid JSON"), std::string::npos) << msg;
}

}  // namespace
}  // namespace tensorpar::io
