#include <gtest/gtest.h>

#include <cmath>

#include "tensorpar/kernels/vec_math.hpp"

namespace tensorpar {

TEST(VecMath, ExpApproxIsWithinFewUlpOverTheNormalRange) {
  double worst = 0, worst_x = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -86.0f + 174.0f * float(i) / 200000.0f;
    const double e = std::exp(double(x)), rel = std::fabs(detail::exp_approx(x) - e) / e;
    if (rel > worst) worst = rel, worst_x = x;
  }
  EXPECT_LT(worst, 4e-7) << "at x = " << worst_x;  // ~3 ulp of float
  EXPECT_EQ(detail::exp_approx(0.0f), 1.0f);
  EXPECT_EQ(detail::exp_approx(-100.0f), 0.0f);
  EXPECT_EQ(detail::exp_approx(-INFINITY), 0.0f);
  EXPECT_GT(detail::exp_approx(1000.0f), 1e38f);
  EXPECT_NEAR(detail::sigmoid(-2.0f), 1 / (1 + std::exp(2.0)), 1e-7);
}

}  // namespace tensorpar
