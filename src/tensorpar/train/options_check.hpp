// The numbers of a training run checked before anything is built: a NaN or negative learning rate,
// betas outside [0, 1), a non-positive epsilon... would otherwise train to NaN and save NaN weights
// with exit code 0. Values out of range are refused, never clamped.
#pragma once
#include "tensorpar/train/trainer.hpp"

namespace tensorpar {

// ConfigError naming the flag, its value and the allowed range.
void check_train_options(const TrainOptions& options);

}  // namespace tensorpar
