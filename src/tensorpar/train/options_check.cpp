#include "tensorpar/train/options_check.hpp"

#include <cmath>
#include <limits>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar {

namespace {

constexpr double kFloatMax = std::numeric_limits<float>::max();

// T is the flag's own type, so the message prints the value as given (a float's shortest form)
template <class T>
void check_range(T value, double low, double high, bool high_open, const char* flag) {
  const bool ok = std::isfinite(value) && value >= low && (high_open ? value < high : value <= high);
  if (high == kFloatMax)
    TP_CHECK(ok, ConfigError, "{} {} is out of range; it must be a finite number >= {}", flag, value, low);
  TP_CHECK(ok, ConfigError, "{} {} is out of range; it must be a finite number in [{}, {}{}", flag, value, low, high,
           high_open ? ")" : "]");
}

void check_positive(int64_t value, const char* flag) {
  TP_CHECK(value >= 1, ConfigError, "{} must be at least 1 (got {})", flag, value);
}

}  // namespace

void check_train_options(const TrainOptions& o) {
  check_positive(o.steps, "--steps");
  check_positive(o.batch, "--batch");
  check_positive(o.seq, "--seq");
  check_positive(o.grad_accum, "--grad-accum");
  check_positive(o.val_batches, "--val-batches");
  TP_CHECK(o.model.vocab_size >= 0, ConfigError, "--vocab must be positive (got {}; absent: from the data)",
           o.model.vocab_size);
  TP_CHECK(o.zero == 0 || o.zero == 1, ConfigError,
           "--zero {} is not supported; use 0 (off) or 1 (ZeRO-1: AdamW state sharded over data parallelism)", o.zero);
  // ZeRO-1 reduce-scatters the gradients during backward, before a pipeline sums the tied embedding's
  // gradient between its first and last stage: the two do not compose yet
  TP_CHECK(o.zero == 0 || o.pp <= 1, ConfigError,
           "--zero 1 with --pp {} is not supported yet; use ZeRO-1 without pipeline stages, or --pp without --zero",
           o.pp);
  TP_CHECK(o.tp >= 0, ConfigError, "--tp must be positive (got {})", o.tp);
  TP_CHECK(o.val_every >= 0, ConfigError, "--val-every must be 0 (only at the end) or positive (got {})", o.val_every);
  TP_CHECK(o.schedule.warmup_steps >= 0, ConfigError, "--warmup must not be negative (got {})",
           o.schedule.warmup_steps);
  // tokens of one optimizer step per rank, and in the step counter's arithmetic
  checked_product({o.batch, o.seq, o.grad_accum}, "--batch x --seq x --grad-accum");
  check_range(o.schedule.lr, 0, kFloatMax, false, "--lr");
  TP_CHECK(o.schedule.lr > 0, ConfigError, "--lr must be positive (got {})", o.schedule.lr);
  check_range(o.schedule.min_lr_ratio, 0, 1, false, "--min-lr-ratio");
  check_range(o.adamw.beta1, 0, 1, true, "--beta1");
  check_range(o.adamw.beta2, 0, 1, true, "--beta2");
  check_range(o.adamw.eps, 0, 1, false, "--eps");
  TP_CHECK(o.adamw.eps > 0, ConfigError, "--eps must be positive (got {})", o.adamw.eps);
  check_range(o.adamw.weight_decay, 0, kFloatMax, false, "--weight-decay");
  check_range(o.grad_clip, 0, kFloatMax, false, "--grad-clip");
  check_range(o.val_fraction, 0, 1, true, "--val-fraction");
}

}  // namespace tensorpar
