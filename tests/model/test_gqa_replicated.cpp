// Grouped-query attention with fewer KV heads than ranks: each KV head is replicated on the
// tp / kv_heads ranks whose query heads use it. Against the serial model in the same test: loss,
// logits, every gradient (the replicated k/v rows summed over the ranks sharing them), the global
// gradient norm (replicated rows counted once), one AdamW step, and a checkpoint saved from the
// replicated layout that equals the serial one byte for byte. kv 2 and 1 (multi-query): at 4 ranks
// both replicate, at 2 ranks kv 1 does.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "../parallel/slices.hpp"
#include "random_weights.hpp"
#include "temp_dir.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/train/adamw.hpp"
#include "tensorpar/train/grad_norm.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::local_slice;

constexpr int64_t kBatch = 2, kSeq = 6;

ModelConfig llama(int64_t kv_heads) {
  ModelConfig c;
  c.family = ModelFamily::Llama;
  c.vocab_size = 300;
  c.max_seq = 8;
  c.hidden = 32;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = kv_heads;
  c.ffn_hidden = 48;
  c.tie_embeddings = false;
  return c;
}

std::vector<int32_t> tokens(uint32_t seed) {
  std::vector<int32_t> t(size_t(kBatch * kSeq));
  for (auto& x : t) x = int32_t((seed = seed * 1664525u + 1013904223u) >> 8) % 300;
  return t;
}

// The local elements of p that correspond to real (unpadded) rows of the serial tensor, and those.
void compare(const Parameter& p, std::span<const float> local, std::span<const float> serial, int64_t vocab,
             double rtol, double atol, const std::string& what) {
  const bool vocab_table = p.name == "model.embed_tokens.weight" || p.name == "lm_head.weight";
  const int64_t cols = p.global_shape.size() == 2 ? p.global_shape[1] : 1;
  std::vector<float> got, want;
  for (int64_t k = 0; k < p.value.numel(); ++k) {
    const int64_t g = p.global_index(k);
    if (vocab_table && g / cols >= vocab) continue;
    got.push_back(local[size_t(k)]);
    want.push_back(serial[size_t(g)]);
  }
  EXPECT_TRUE(all_close(got, want, rtol, atol)) << p.name << " " << what;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class GqaReplicated : public ::testing::TestWithParam<int64_t> {};

TEST_P(GqaReplicated, EqualsSerialLossLogitsGradientsNormAndAdamWStep) {
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const ModelConfig config = llama(GetParam());
  TransformerLM serial(self, config, kBatch, kSeq, 3), parallel(world, config, kBatch, kSeq, 3);
  testing::randomize_weights(serial, 8, 0.2f);
  testing::randomize_weights(parallel, 8, 0.2f);
  if (config.kv_heads < world.size()) {  // the layout under test: each rank one KV head, shared
    const Parameter& qkv = parallel.parameter("model.layers.0.self_attn.qkv_proj.weight");
    ASSERT_EQ(qkv.blocks.size(), 3u);
    EXPECT_EQ(qkv.blocks[1].replicas, world.size() / config.kv_heads);
    EXPECT_EQ(qkv.blocks[1].global_start, config.heads * config.head_dim() +
                                              world.rank() / (world.size() / config.kv_heads) * config.head_dim());
  }
  const auto x = tokens(1), y = tokens(2);
  std::vector<float> logits_serial(size_t(kBatch * config.vocab_size)), logits(logits_serial.size());
  serial.last_logits(logits_serial.data(), x.data(), kBatch, kSeq);
  parallel.last_logits(logits.data(), x.data(), kBatch, kSeq);
  EXPECT_TRUE(all_close(logits, logits_serial, 1e-5, 1e-5)) << "logits";

  const float loss_serial = serial.forward(x.data(), y.data(), kBatch, kSeq);
  serial.backward(x.data(), y.data(), kBatch, kSeq);
  // two half steps (gradient accumulation): the KV-head all-reduce must sum only the new part
  const float loss = parallel.forward(x.data(), y.data(), kBatch, kSeq);
  parallel.backward(x.data(), y.data(), kBatch, kSeq, 0.5f);
  parallel.forward(x.data(), y.data(), kBatch, kSeq);
  parallel.backward(x.data(), y.data(), kBatch, kSeq, 0.5f);
  EXPECT_NEAR(loss, loss_serial, 1e-5 * std::fabs(loss_serial));
  ASSERT_EQ(serial.parameters().size(), parallel.parameters().size());
  for (size_t i = 0; i < serial.parameters().size(); ++i) {
    const Parameter& s = *serial.parameters()[i];
    const Parameter& p = *parallel.parameters()[i];
    ASSERT_EQ(s.name, p.name);
    compare(p, p.grad.span(), s.grad.span(), config.vocab_size, 1e-4, 1e-6, "grad");
  }
  const double norm_serial = global_grad_norm(self, serial.parameters());
  EXPECT_NEAR(global_grad_norm(world, parallel.parameters()), norm_serial, 1e-5 * norm_serial)
      << "replicated KV rows must be counted once";

  const AdamWConfig adamw{0.9f, 0.95f, 1e-8f, 0.1f};
  AdamW opt_serial(serial.parameters(), adamw), opt(parallel.parameters(), adamw);
  opt_serial.step(1e-3f);
  opt.step(1e-3f);
  for (size_t i = 0; i < serial.parameters().size(); ++i) {
    const Parameter& s = *serial.parameters()[i];
    const Parameter& p = *parallel.parameters()[i];
    // the first Adam step is ~lr * sign(g): an element whose gradient is ~eps amplifies rounding, so
    // the absolute tolerance is 1% of the learning rate
    compare(p, p.value.span(), s.value.span(), config.vocab_size, 1e-5, 1e-5, "after one AdamW step");
  }

  // saved from the replicated layout (each shared KV head written once) and loaded at TP=1: bit-exact;
  // the serial model's checkpoint loaded into the replicated layout: each rank reads its head
  testing::SharedTempDir dir(world);
  io::save_hf_checkpoint(world, parallel, dir.path("parallel"));
  if (world.rank() == 0) io::save_hf_checkpoint(self, serial, dir.path("serial"));
  world.barrier();
  TransformerLM at_one(self, config, kBatch, kSeq, 99), at_world(world, config, kBatch, kSeq, 99);
  io::load_hf_checkpoint(self, at_one, dir.path("parallel"));
  io::load_hf_checkpoint(world, at_world, dir.path("serial"));
  for (size_t i = 0; i < serial.parameters().size(); ++i) {
    const Parameter& p = *parallel.parameters()[i];
    compare(p, p.value.span(), at_one.parameters()[i]->value.span(), config.vocab_size, 0, 0, "saved then loaded");
    const Parameter& q = *at_world.parameters()[i];
    compare(q, q.value.span(), serial.parameters()[i]->value.span(), config.vocab_size, 0, 0, "loaded from serial");
  }
  if (world.rank() == 0) {  // the same layout (header) as a serial save
    const std::string a = read_bytes(dir.path("parallel/model.safetensors")), b = read_bytes(dir.path("serial/model.safetensors"));
    ASSERT_EQ(a.size(), b.size());
    const uint64_t header = *reinterpret_cast<const uint64_t*>(a.data());
    EXPECT_EQ(a.substr(0, 8 + header), b.substr(0, 8 + header));
  }
}

INSTANTIATE_TEST_SUITE_P(KvHeads, GqaReplicated, ::testing::Values(2, 1),
                         [](const auto& info) { return "kv" + std::to_string(info.param); });

TEST(GqaReplicated, KvHeadsNeitherDividingNorMultipleOfTpIsAConfigError) {
  ModelConfig c = llama(2);
  c.heads = 6;
  c.hidden = 36;
  c.kv_heads = 2;
  EXPECT_NO_THROW(c.validate(2));
  c.kv_heads = 3;
  c.heads = 6;
  try {
    c.validate(2);
    FAIL() << "3 KV heads over 2 ranks";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("3 key/value heads"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tensorpar
