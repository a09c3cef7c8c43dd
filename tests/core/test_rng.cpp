#include <gtest/gtest.h>

#include <cmath>

#include "tensorpar/core/rng.hpp"

namespace tensorpar {

// Known-answer test from the Random123 distribution (kat_vectors: philox4x32 10 rounds).
TEST(Philox, MatchesRandom123KnownAnswers) {
  auto r = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
  r = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(r[0], 0x408f276du);
  EXPECT_EQ(r[1], 0x41c83b0eu);
  EXPECT_EQ(r[2], 0xa20bc7c6u);
  EXPECT_EQ(r[3], 0x6d5451fdu);
}

TEST(Philox, NormalHasUnitMomentsAndDependsOnName) {
  const PhiloxKey key = philox_key(1234, "h.0.mlp.c_fc.weight");
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = philox_normal(key, uint64_t(i));
    sum += x;
    sum2 += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum2 / n, 1.0, 0.01);
  EXPECT_NE(philox_normal(key, 7), philox_normal(philox_key(1234, "h.1.mlp.c_fc.weight"), 7));
  EXPECT_NE(philox_normal(key, 7), philox_normal(philox_key(1235, "h.0.mlp.c_fc.weight"), 7));
  EXPECT_EQ(philox_normal(key, 7), philox_normal(philox_key(1234, "h.0.mlp.c_fc.weight"), 7));
}

TEST(Philox, UniformIsInUnitInterval) {
  const PhiloxKey key = philox_key(1, "dropout");
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const float u = philox_uniform(key, uint64_t(i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

}  // namespace tensorpar
