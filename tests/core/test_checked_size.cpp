// Checked size arithmetic: products and sums of untrusted sizes throw instead of wrapping, and a
// tensor whose byte count would wrap (or exceed this machine's memory) is refused before allocation.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/core/tensor.hpp"

namespace tensorpar {

TEST(CheckedSize, ProductsAndSumsThatFitAreExact) {
  EXPECT_EQ(checked_mul(3, 5, "x"), 15);
  EXPECT_EQ(checked_mul(0, INT64_MAX, "x"), 0);
  EXPECT_EQ(checked_mul(INT64_MAX, 1, "x"), INT64_MAX);
  EXPECT_EQ(checked_add(INT64_MAX - 1, 1, "x"), INT64_MAX);
  EXPECT_EQ(checked_product({2, 3, 7}, "x"), 42);
  EXPECT_EQ(checked_product({}, "x"), 1);
}

TEST(CheckedSize, OverflowAndNegativesThrowNamingTheQuantity) {
  // the cases: --vocab 2^59 x hidden x 4 bytes, batch x sequence beyond int64
  EXPECT_THROW(checked_product({int64_t(1) << 59, 768, 4}, "embedding bytes"), ConfigError);
  EXPECT_THROW(checked_mul(int64_t(1) << 62, 4, "batch x sequence"), ConfigError);
  EXPECT_THROW(checked_add(INT64_MAX, 1, "x"), ConfigError);
  EXPECT_THROW(checked_mul(-1, 5, "x"), ConfigError);
  EXPECT_THROW(checked_add(-3, 1, "x"), ConfigError);
  try {
    checked_mul(int64_t(1) << 40, int64_t(1) << 40, "batch x sequence");
    ADD_FAILURE() << "no throw";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("batch x sequence: 1099511627776 x 1099511627776"), std::string::npos)
        << e.what();
  }
}

TEST(CheckedSize, MemoryBoundSaysHowMuchIsNeeded) {
  const int64_t memory = physical_memory_bytes();
  ASSERT_GT(memory, int64_t(1) << 20);
  EXPECT_NO_THROW(check_fits_in_memory(memory / 2, "half", "fix"));
  try {
    check_fits_in_memory(INT64_MAX, "a model of 9e18 bytes", "use a smaller one");
    ADD_FAILURE() << "no throw";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("a model of 9e18 bytes needs 9223372036.85 GB but this machine has"), std::string::npos) << m;
    EXPECT_NE(m.find("use a smaller one"), std::string::npos) << m;
  }
}

TEST(CheckedSize, TensorsWhoseSizeWrapsOrExceedsMemoryAreRefused) {
  // 2^59 x 2^5 elements wraps int64; 2^61 F32 elements is 2^63 bytes, which wraps the byte count
  EXPECT_THROW(Tensor({int64_t(1) << 59, 32}), ShapeError);
  EXPECT_THROW(Tensor({int64_t(1) << 61}), ConfigError);
  // fits in 64 bits but not in this machine
  EXPECT_THROW(Tensor({physical_memory_bytes()}), ConfigError);
  EXPECT_THROW(Tensor({-4, 2}), ShapeError);
  EXPECT_NO_THROW(Tensor({0, int64_t(1) << 62}));  // empty: nothing to allocate
}

}  // namespace tensorpar
