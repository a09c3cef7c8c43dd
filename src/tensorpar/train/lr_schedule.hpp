// Learning-rate schedules: linear warmup then cosine decay to min_lr_ratio * lr (llm.c, nanoGPT),
// or constant.
#pragma once
#include <cstdint>
#include <string>

namespace tensorpar {

struct LrSchedule {
  enum class Kind { Cosine, Constant } kind = Kind::Cosine;
  float lr = 3e-4f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float min_lr_ratio = 0.1f;

  // Learning rate of 0-based step `step`.
  float at(int64_t step) const;
  static Kind parse_kind(const std::string& name);  // "cosine" | "constant", ConfigError otherwise
};

}  // namespace tensorpar
