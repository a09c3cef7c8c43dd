// Pipeline schedules as pure functions: the sequence of forward and backward micro-batch passes one
// stage runs in one optimizer step. No communication here: the executor (train/pipeline.hpp) turns
// each pass into receive → compute → send, so a schedule can be tested without MPI.
//
// GPipe (Huang et al. 2019): every forward, then every backward; each stage keeps all m micro-batches
// in flight. 1F1B (PipeDream-Flush, Narayanan et al. 2021): stage s runs P - s - 1 warm-up forwards,
// then alternates one forward and one backward, then drains the remaining backwards, so it never
// holds more than P - s micro-batches. Both run the backwards in micro-batch order 0, 1, ..., m-1, so
// each stage accumulates gradients in the same order as a single process: equal numbers.
#pragma once
#include <string>
#include <vector>

namespace tensorpar {

enum class PipelineSchedule { GPipe, OneFOneB };
PipelineSchedule parse_pipeline_schedule(const std::string& name);  // "gpipe" | "1f1b"; ConfigError otherwise
const char* pipeline_schedule_name(PipelineSchedule s);

struct PipelineOp {
  enum Kind { Forward, Backward } kind;
  int micro;  // 0-based micro-batch
  bool operator==(const PipelineOp&) const = default;
};

// The passes of `stage` (0-based, of `stages`) over `micro_batches` micro-batches, in order.
std::vector<PipelineOp> pipeline_ops(PipelineSchedule schedule, int stages, int stage, int micro_batches);

// The most micro-batches whose forward has run and whose backward has not, at any point of `ops`:
// how many stage inputs the stage keeps at once.
int max_in_flight(const std::vector<PipelineOp>& ops);

// Contiguous split of `layers` into `stages`: stage s holds layers [first[s], first[s + 1]); the first
// layers % stages stages hold one layer more. ConfigError if there are fewer layers than stages.
std::vector<int> split_layers(int layers, int stages);

}  // namespace tensorpar
