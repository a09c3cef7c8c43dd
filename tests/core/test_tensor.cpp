#include <gtest/gtest.h>

#include <cstdint>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/core/divide.hpp"
#include "tensorpar/core/tensor.hpp"

namespace tensorpar {

TEST(Tensor, IsAlignedZeroedAndSized) {
  Tensor t({3, 5, 7});
  EXPECT_EQ(t.numel(), 105);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % Tensor::kAlignment, 0u);
  for (float x : t.span()) EXPECT_EQ(x, 0.0f);
  Tensor b({4}, DType::BF16);
  EXPECT_EQ(b.nbytes(), 8u);
  EXPECT_THROW(b.f32(), Error);
}

TEST(Tensor, ViewSharesTheBufferWithoutOwningIt) {
  Tensor owner({2, 3});
  {
    Tensor v = owner.view();
    EXPECT_FALSE(v.owns_data());
    EXPECT_EQ(v.raw(), owner.raw());
    EXPECT_EQ(v.shape(), owner.shape());
    v.f32()[4] = 7.0f;
    Tensor moved = std::move(v);  // still a view after a move
    EXPECT_FALSE(moved.owns_data());
  }  // destroying the views frees nothing
  EXPECT_TRUE(owner.owns_data());
  EXPECT_EQ(owner.f32()[4], 7.0f);
  EXPECT_TRUE(owner.view().clone().owns_data()) << "a clone of a view owns its copy";
}

TEST(Tensor, MatrixViewsAddressBlocks) {
  Tensor t({4, 6});
  for (int64_t i = 0; i < 24; ++i) t.f32()[i] = float(i);
  MatrixView m = t.matrix();
  MatrixView block = m.row_block(1, 2).col_block(3, 2);
  EXPECT_EQ(block.rows, 2);
  EXPECT_EQ(block.cols, 2);
  EXPECT_FALSE(block.contiguous());
  EXPECT_EQ(block(0, 0), 9.0f);
  EXPECT_EQ(block(1, 1), 16.0f);
}

TEST(Tensor, CloneCopies) {
  Tensor t({2, 2});
  t.f32()[3] = 5;
  Tensor c = t.clone();
  t.f32()[3] = 1;
  EXPECT_EQ(c.f32()[3], 5.0f);
}

TEST(Divide, RefusesUnevenSplitsNamingBothNumbers) {
  EXPECT_EQ(divide(12, 4), 3);
  try {
    divide(10, 4, "output features");
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("output features 10"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("over 4"), std::string::npos) << e.what();
  }
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down to 1.0)
  EXPECT_EQ(float_to_bf16(1.00390625f).bits, 0x3f80);
  // 1 + 3*2^-8 is halfway too: ties to even (up)
  EXPECT_EQ(float_to_bf16(1.01171875f).bits, 0x3f82);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-3.5f)), -3.5f);
}

TEST(F16, RoundTripsNormalsSubnormalsAndInfinity) {
  for (float x : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    EXPECT_EQ(f16_to_float(float_to_f16(x)), x) << x;
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
}

}  // namespace tensorpar
