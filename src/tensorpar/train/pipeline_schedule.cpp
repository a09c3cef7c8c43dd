#include "tensorpar/train/pipeline_schedule.hpp"

#include <algorithm>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "gpipe") return PipelineSchedule::GPipe;
  if (name == "1f1b") return PipelineSchedule::OneFOneB;
  throw ConfigError(fmt::format("unknown pipeline schedule '{}'; use gpipe or 1f1b", name));
}

const char* pipeline_schedule_name(PipelineSchedule s) { return s == PipelineSchedule::GPipe ? "gpipe" : "1f1b"; }

std::vector<PipelineOp> pipeline_ops(PipelineSchedule schedule, int stages, int stage, int micro_batches) {
  TP_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, ConfigError,
           "pipeline schedule of stage {} of {} over {} micro-batches", stage, stages, micro_batches);
  std::vector<PipelineOp> ops;
  const int m = micro_batches;
  if (schedule == PipelineSchedule::GPipe) {
    for (int i = 0; i < m; ++i) ops.push_back({PipelineOp::Forward, i});
    for (int i = 0; i < m; ++i) ops.push_back({PipelineOp::Backward, i});
    return ops;
  }
  // 1F1B: the warm-up fills the pipeline below this stage; then each forward is followed by the
  // backward of the oldest micro-batch in flight
  const int warmup = std::min(stages - stage - 1, m);
  int forward = 0, backward = 0;
  for (; forward < warmup; ++forward) ops.push_back({PipelineOp::Forward, forward});
  for (; forward < m; ++forward, ++backward) {
    ops.push_back({PipelineOp::Forward, forward});
    ops.push_back({PipelineOp::Backward, backward});
  }
  for (; backward < m; ++backward) ops.push_back({PipelineOp::Backward, backward});
  return ops;
}

int max_in_flight(const std::vector<PipelineOp>& ops) {
  int now = 0, most = 0;
  for (const PipelineOp& op : ops) {
    now += op.kind == PipelineOp::Forward ? 1 : -1;
    most = std::max(most, now);
  }
  return most;
}

std::vector<int> split_layers(int layers, int stages) {
  TP_CHECK(stages >= 1 && layers >= stages, ConfigError,
           "--pp {} needs at least one layer per stage but the model has {} layers; use --pp {} or fewer", stages,
           layers, layers);
  std::vector<int> first(size_t(stages) + 1, 0);
  for (int s = 0; s < stages; ++s) first[size_t(s) + 1] = first[size_t(s)] + layers / stages + (s < layers % stages ? 1 : 0);
  return first;
}

}  // namespace tensorpar
