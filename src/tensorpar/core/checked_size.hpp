// Sizes formed from untrusted numbers (flags, config.json, file headers): multiplied and added with
// overflow checks, and bounded by this machine's memory, *before* anything is allocated. A product
// that wraps would otherwise allocate a few bytes for what the code then indexes as gigabytes.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

// a * b, or ConfigError "<what>: a x b overflows 64 bits" (also for negative operands).
inline int64_t checked_mul(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  TP_CHECK(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &out), ConfigError,
           "{}: {} x {} is negative or overflows 64 bits; use smaller sizes", what, a, b);
  return out;
}

// a + b, or ConfigError (also for negative operands).
inline int64_t checked_add(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  TP_CHECK(a >= 0 && b >= 0 && !__builtin_add_overflow(a, b, &out), ConfigError,
           "{}: {} + {} is negative or overflows 64 bits; use smaller sizes", what, a, b);
  return out;
}

// The product of non-negative factors, overflow-checked.
inline int64_t checked_product(std::initializer_list<int64_t> factors, std::string_view what) {
  int64_t n = 1;
  for (int64_t f : factors) n = checked_mul(n, f, what);
  return n;
}

// Bytes of physical memory on this machine (sysconf), or INT64_MAX if unknown.
int64_t physical_memory_bytes();

// ConfigError "<what> needs N GB but this machine has M GB of memory; <fix>" when bytes exceed the
// physical memory: a request that large would be killed by the OOM killer half-way, or page forever.
void check_fits_in_memory(int64_t bytes, std::string_view what, std::string_view fix);

}  // namespace tensorpar
