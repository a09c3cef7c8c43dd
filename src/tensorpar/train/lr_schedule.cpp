#include "tensorpar/train/lr_schedule.hpp"

#include <cmath>
#include <numbers>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

float LrSchedule::at(int64_t step) const {
  if (kind == Kind::Constant) return lr;
  if (step < warmup_steps) return lr * float(step + 1) / float(warmup_steps);
  const int64_t decay_steps = total_steps - warmup_steps;
  if (decay_steps <= 0) return lr;
  const double progress = std::min(1.0, double(step - warmup_steps) / double(decay_steps));
  const double min_lr = double(lr) * min_lr_ratio;
  return float(min_lr + 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) * (double(lr) - min_lr));
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "cosine") return Kind::Cosine;
  if (name == "constant") return Kind::Constant;
  throw ConfigError(fmt::format("unknown learning-rate schedule '{}'; use cosine or constant", name));
}

}  // namespace tensorpar
