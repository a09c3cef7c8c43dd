#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensorpar/core/error.hpp"
#include "tensorpar/kernels/adamw.hpp"

namespace tensorpar {

TEST(AdamW, TwoStepsMatchHandComputedNumbers) {
  // lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01, param 1.0, grads 0.5 then -0.2.
  AdamWParams p{0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1};
  std::vector<float> param = {1.0f, -2.0f}, m(2, 0.0f), v(2, 0.0f);
  std::vector<float> g1 = {0.5f, 0.0f};
  adamw_update(param.data(), g1.data(), m.data(), v.data(), 2, p);
  // Step 1, element 0: decay 1 - 0.1*0.01 = 0.999 -> 0.999; m = 0.05, v = 0.00025;
  // mhat = 0.05/0.1 = 0.5, vhat = 0.00025/0.001 = 0.25, update 0.1 * 0.5 / (0.5 + 1e-8) = 0.1 - 2e-9
  // -> param = 0.999 - 0.1 = 0.899.
  // m and v carry the f32 rounding of the betas: 1 - 0.999f = 0.00099998713 (relative 1.3e-5 from 0.001),
  // 1 - 0.9f = 0.099999994. The bias corrections use the same f32 betas, so mhat/vhat and param do not.
  EXPECT_NEAR(m[0], 0.05, 1e-7);
  EXPECT_NEAR(v[0], 0.00025, 2e-5 * 0.00025);
  EXPECT_NEAR(param[0], 0.899, 1e-6);
  // Element 1 has zero gradient: only the decay acts (-2 * 0.999), update 0/(0+eps) = 0.
  EXPECT_NEAR(param[1], -1.998, 1e-6);

  p.step = 2;
  std::vector<float> g2 = {-0.2f, 0.0f};
  adamw_update(param.data(), g2.data(), m.data(), v.data(), 2, p);
  // Step 2: param = 0.899 * 0.999 = 0.898101; m = 0.9*0.05 + 0.1*(-0.2) = 0.025;
  // v = 0.999*0.00025 + 0.001*0.04 = 0.00028975; mhat = 0.025/0.19 = 0.131578947;
  // vhat = 0.00028975/0.001999 = 0.144947474; sqrt = 0.380720;  update = 0.1 * 0.131578947 / 0.380720 = 0.0345605
  // -> param = 0.898101 - 0.0345605 = 0.8635405.
  const double mhat = 0.025 / 0.19, vhat = 0.00028975 / (1 - 0.999 * 0.999);
  const double expected = 0.899 * 0.999 - 0.1 * mhat / (std::sqrt(vhat) + 1e-8);
  EXPECT_NEAR(expected, 0.8635405, 1e-6);  // the formula and the numbers written above agree
  EXPECT_NEAR(m[0], 0.025, 1e-7);
  EXPECT_NEAR(v[0], 0.00028975, 2e-5 * 0.00028975);
  EXPECT_NEAR(param[0], 0.8635405, 2e-6);
  EXPECT_NEAR(param[1], -1.998 * 0.999, 1e-6);
}

TEST(AdamW, RejectsStepZero) {
  AdamWParams p{0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 0};
  float x = 0, g = 0, m = 0, v = 0;
  EXPECT_THROW(adamw_update(&x, &g, &m, &v, 1, p), ConfigError);
}

}  // namespace tensorpar
