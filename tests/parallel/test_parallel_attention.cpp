// ParallelAttention (GPT-2: bias, no RoPE; Llama: no bias, RoPE, with and without grouped-query
// attention) at the world's TP degree against the same layer computed serially (TP=1) in the same
// test: output, input gradient and every parameter's value and gradient; one all-reduce each way;
// finite differences on the serial layer; and the ConfigError for head counts a TP degree cannot split.
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "slices.hpp"
#include "tensorpar/parallel/parallel_attention.hpp"
#include "test_util.hpp"

namespace tensorpar {
namespace {

using testing::all_close;
using testing::local_slice;
using testing::random_vector;

constexpr int64_t kB = 2, kT = 5, kHeads = 12, kHeadDim = 4, kHidden = kHeads * kHeadDim;  // 12 heads: TP 1..4

struct Style {
  const char* name;
  int64_t kv_heads;
  bool bias, rope;
};
void PrintTo(const Style& s, std::ostream* os) { *os << s.name; }  // gtest names the style on failure

const Style kGpt2{"gpt2", kHeads, true, false};
const Style kLlama{"llama_mha", kHeads, false, true};
const Style kLlamaGqa{"llama_gqa", 4, false, true};  // 4 kv heads: TP 3 cannot split them

AttentionOptions options(const Style& s) {
  AttentionOptions o;
  o.qkv_name = "h.0.attn.c_attn";
  o.proj_name = "h.0.attn.c_proj";
  o.hidden = kHidden;
  o.n_heads = kHeads;
  o.n_kv_heads = s.kv_heads;
  o.head_dim = kHeadDim;
  o.bias = s.bias;
  o.rope = s.rope;
  o.rope_theta = 100.0;  // a small base so every frequency turns visibly over 5 positions
  o.max_positions = 8;
  o.seed = 5;
  o.init_std = 0.3f;  // large enough that the softmax is far from uniform
  o.proj_init_std = 0.2f;
  return o;
}

// Non-zero biases (they initialise to zero), the same global values at every TP degree.
void set_biases(ParallelAttention& att) {
  if (!att.qkv.bias.value.empty()) {
    const auto full = random_vector(size_t(att.qkv.bias.global_shape[0]), 21, 0.5f);
    const auto mine = local_slice(att.qkv.bias, full);
    std::copy(mine.begin(), mine.end(), att.qkv.bias.value.f32());
  }
  if (!att.proj.bias.value.empty()) {
    const auto full = random_vector(size_t(att.proj.bias.global_shape[0]), 22, 0.5f);
    std::copy(full.begin(), full.end(), att.proj.bias.value.f32());  // replicated
  }
}

// Whether TP degree t can split this style; if not, the constructor must throw ConfigError.
bool splittable(const Style& s, int t) { return kHeads % t == 0 && s.kv_heads % t == 0; }

class ParallelAttentionTest : public ::testing::TestWithParam<Style> {};

TEST_P(ParallelAttentionTest, MatchesSerialWithOneAllReduceEachWay) {
  const Style s = GetParam();
  ProcessGroup self = ProcessGroup::self(), world = ProcessGroup::world();
  const int t = world.size();
  if (!splittable(s, t)) {
    // the kv heads (4) cannot be split over 3 ranks: every rank must refuse, naming both numbers
    try {
      ParallelAttention parallel(world, options(s), kB, kT);
      FAIL() << "expected ConfigError for " << s.kv_heads << " kv heads at TP " << t;
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(s.kv_heads) + " key/value heads"), std::string::npos) << msg;
      EXPECT_NE(msg.find("over " + std::to_string(t) + " tensor-parallel ranks"), std::string::npos) << msg;
    }
    return;
  }
  ParallelAttention serial(self, options(s), kB, kT), parallel(world, options(s), kB, kT);
  ASSERT_EQ(parallel.heads_per_partition(), kHeads / t);
  ASSERT_EQ(parallel.kv_heads_per_partition(), s.kv_heads / t);
  ASSERT_EQ(parallel.rope_table() != nullptr, s.rope);

  std::vector<Parameter*> ps, pp;
  serial.collect_parameters(ps);
  parallel.collect_parameters(pp);
  ASSERT_EQ(ps.size(), s.bias ? 4u : 2u);
  ASSERT_EQ(ps.size(), pp.size());
  // initialisation: every shard is a bit-identical slice of the serial weights
  for (size_t i = 0; i < ps.size(); ++i) {
    ASSERT_EQ(pp[i]->name, ps[i]->name);
    EXPECT_TRUE(all_close(pp[i]->value.span(), local_slice(*pp[i], ps[i]->value.span()), 0, 0)) << pp[i]->name;
  }
  set_biases(serial);
  set_biases(parallel);

  const int64_t N = kB * kT;
  const auto x = random_vector(size_t(N * kHidden), 31);
  const auto dy = random_vector(size_t(N * kHidden), 32);
  std::vector<float> y_serial(x.size()), dx_serial(x.size()), y(x.size()), dx(x.size());
  serial.forward(y_serial.data(), x.data(), kB, kT);
  serial.backward(dx_serial.data(), dy.data(), x.data(), kB, kT);

  world.reset_stats();
  parallel.forward(y.data(), x.data(), kB, kT);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "attention forward: exactly one all-reduce";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0);
  world.reset_stats();
  parallel.backward(dx.data(), dy.data(), x.data(), kB, kT);
  EXPECT_EQ(world.stats().count(Collective::AllReduce), 1) << "attention backward: exactly one all-reduce";
  EXPECT_EQ(world.stats().count(Collective::AllGather), 0);

  EXPECT_TRUE(all_close(y, y_serial)) << "output";
  EXPECT_TRUE(all_close(dx, dx_serial)) << "input gradient";
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(all_close(pp[i]->value.span(), local_slice(*pp[i], ps[i]->value.span()), 0, 0)) << pp[i]->name;
    // a weight gradient sums N = 10 products of O(1) terms in the order the GEMM picks for its shape and
    // ISA (AVX2 and AVX-512 kernels differ): |error| <= 10 u sum|terms|, a few 1e-6, above all_close's
    // default atol of 1e-6 (seen: 1.09e-6 on an AVX2-only Zen 3); a wrong shard is off by O(0.1)
    EXPECT_TRUE(all_close(pp[i]->grad.span(), local_slice(*pp[i], ps[i]->grad.span()), 1e-5, 4e-6)) << pp[i]->name;
  }
  // a smaller call than the layer was sized for (B=1, T=3) still matches
  std::vector<float> y1_serial(size_t(3 * kHidden)), y1(size_t(3 * kHidden));
  serial.forward(y1_serial.data(), x.data(), 1, 3);
  parallel.forward(y1.data(), x.data(), 1, 3);
  EXPECT_TRUE(all_close(y1, y1_serial)) << "B=1, T=3";
}

TEST_P(ParallelAttentionTest, SerialGradientsMatchFiniteDifferences) {
  const Style s = GetParam();
  ProcessGroup self = ProcessGroup::self();
  ParallelAttention att(self, options(s), kB, kT);
  set_biases(att);
  const int64_t N = kB * kT;
  auto x = random_vector(size_t(N * kHidden), 33);
  const auto w_loss = random_vector(x.size(), 34);  // loss = sum(y * w_loss)
  std::vector<float> y(x.size()), dx(x.size());
  auto loss = [&] {
    att.forward(y.data(), x.data(), kB, kT);
    double sum = 0;
    for (size_t i = 0; i < y.size(); ++i) sum += double(y[i]) * w_loss[i];
    return sum;
  };
  loss();  // backward reads the activations of the last forward
  att.backward(dx.data(), w_loss.data(), x.data(), kB, kT);
  for (size_t i = 0; i < x.size(); i += 7)
    EXPECT_NEAR(dx[i], testing::central_difference(x, i, loss), 5e-3) << "dx[" << i << "]";
  std::vector<Parameter*> params;
  att.collect_parameters(params);
  for (Parameter* p : params) {
    std::vector<float> v(p->value.span().begin(), p->value.span().end());
    // a stride coprime with the row widths, so the sample visits q, k and v rows and many columns
    const size_t stride = v.size() > 500 ? 97 : 5;
    for (size_t i = 0; i < v.size(); i += stride) {
      auto fd = [&] {
        std::copy(v.begin(), v.end(), p->value.f32());
        return loss();
      };
      EXPECT_NEAR(p->grad.f32()[i], testing::central_difference(v, i, fd), 5e-3) << p->name << "[" << i << "]";
    }
    std::copy(v.begin(), v.end(), p->value.f32());
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, ParallelAttentionTest, ::testing::Values(kGpt2, kLlama, kLlamaGqa),
                         [](const ::testing::TestParamInfo<Style>& info) { return std::string(info.param.name); });

TEST(ParallelAttention, HeadsNotDivisibleByTpThrowConfigErrorOnEveryRank) {
  ProcessGroup world = ProcessGroup::world();
  if (world.size() == 1) return;  // every head count splits over one rank
  AttentionOptions o = options(kGpt2);
  o.n_heads = o.n_kv_heads = 5;  // 5 heads split over none of 2, 3, 4
  o.hidden = 5 * kHeadDim;
  try {
    ParallelAttention att(world, o, kB, kT);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("5 attention heads"), std::string::npos) << msg;
    EXPECT_NE(msg.find("over " + std::to_string(world.size()) + " tensor-parallel ranks"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace tensorpar
