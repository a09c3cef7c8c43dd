// The schedules as pure functions: every micro-batch's forward then backward exactly once, backwards in
// micro-batch order, and 1F1B's bound of P - s micro-batches in flight on stage s (GPipe: all m).
#include <gtest/gtest.h>

#include <algorithm>

#include "tensorpar/core/error.hpp"
#include "tensorpar/train/pipeline_schedule.hpp"

namespace tensorpar {

namespace {
void expect_well_formed(const std::vector<PipelineOp>& ops, int m, const std::string& where) {
  std::vector<int> forward_at(size_t(m), -1), backward_at(size_t(m), -1);
  int last_backward = -1;
  for (size_t i = 0; i < ops.size(); ++i) {
    auto& at = ops[i].kind == PipelineOp::Forward ? forward_at : backward_at;
    ASSERT_GE(ops[i].micro, 0) << where;
    ASSERT_LT(ops[i].micro, m) << where;
    ASSERT_EQ(at[size_t(ops[i].micro)], -1) << where << ": micro-batch " << ops[i].micro << " twice";
    at[size_t(ops[i].micro)] = int(i);
    if (ops[i].kind == PipelineOp::Backward) {
      EXPECT_EQ(ops[i].micro, last_backward + 1) << where << ": backwards out of micro-batch order";
      last_backward = ops[i].micro;
    }
  }
  for (int k = 0; k < m; ++k) {
    EXPECT_GE(forward_at[size_t(k)], 0) << where;
    EXPECT_GT(backward_at[size_t(k)], forward_at[size_t(k)]) << where << ": backward before forward of " << k;
  }
  // forwards also in order (a stage consumes the activations in the order they are sent)
  for (int k = 1; k < m; ++k) EXPECT_GT(forward_at[size_t(k)], forward_at[size_t(k - 1)]) << where;
}
}  // namespace

TEST(PipelineSchedule, EveryPassOnceAndInFlightBounded) {
  for (int P = 1; P <= 6; ++P)
    for (int s = 0; s < P; ++s)
      for (int m = 1; m <= 9; ++m) {
        const std::string where = fmt::format("P {} stage {} m {}", P, s, m);
        const auto gpipe = pipeline_ops(PipelineSchedule::GPipe, P, s, m);
        const auto ofob = pipeline_ops(PipelineSchedule::OneFOneB, P, s, m);
        ASSERT_EQ(gpipe.size(), size_t(2 * m)) << where;
        ASSERT_EQ(ofob.size(), size_t(2 * m)) << where;
        expect_well_formed(gpipe, m, where);
        expect_well_formed(ofob, m, where);
        EXPECT_EQ(max_in_flight(gpipe), m) << where;
        EXPECT_EQ(max_in_flight(ofob), std::min(P - s, m)) << where;
      }
}

TEST(PipelineSchedule, OneFOneBOnFourStagesMatchesTheTextbook) {
  using F = PipelineOp;
  // Narayanan et al. 2021, figure 4 (top), first and last stage of four with 8 micro-batches
  const std::vector<PipelineOp> first = {{F::Forward, 0},  {F::Forward, 1},  {F::Forward, 2},  {F::Forward, 3},
                                         {F::Backward, 0}, {F::Forward, 4},  {F::Backward, 1}, {F::Forward, 5},
                                         {F::Backward, 2}, {F::Forward, 6},  {F::Backward, 3}, {F::Forward, 7},
                                         {F::Backward, 4}, {F::Backward, 5}, {F::Backward, 6}, {F::Backward, 7}};
  EXPECT_EQ(pipeline_ops(PipelineSchedule::OneFOneB, 4, 0, 8), first);
  std::vector<PipelineOp> last;
  for (int k = 0; k < 8; ++k) {
    last.push_back({F::Forward, k});
    last.push_back({F::Backward, k});
  }
  EXPECT_EQ(pipeline_ops(PipelineSchedule::OneFOneB, 4, 3, 8), last);
}

TEST(PipelineSchedule, SplitLayersContiguousUnevenFirst) {
  EXPECT_EQ(split_layers(4, 2), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(split_layers(5, 2), (std::vector<int>{0, 3, 5}));
  EXPECT_EQ(split_layers(7, 4), (std::vector<int>{0, 2, 4, 6, 7}));
  EXPECT_EQ(split_layers(3, 3), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_THROW(split_layers(2, 3), ConfigError);
  EXPECT_EQ(parse_pipeline_schedule("1f1b"), PipelineSchedule::OneFOneB);
  EXPECT_EQ(parse_pipeline_schedule("gpipe"), PipelineSchedule::GPipe);
  EXPECT_THROW(parse_pipeline_schedule("zb"), ConfigError);
}

}  // namespace tensorpar
