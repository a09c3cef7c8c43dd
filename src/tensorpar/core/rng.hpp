// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value is a pure function of
// (key, counter), so any rank can generate exactly the elements it owns: weights and dropout masks
// come out bit-identical whatever the tensor-parallel degree.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace tensorpar {

struct PhiloxKey {
  uint32_t k0 = 0, k1 = 0;
};

// Key for one named stream: the seed mixed with a 64-bit FNV-1a hash of the name.
PhiloxKey philox_key(uint64_t seed, std::string_view name);

// The Philox4x32-10 block function: four random 32-bit words for a 128-bit counter.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, PhiloxKey key);

// Uniform in [0, 1) for element `index` of the stream (24 random bits, exactly representable).
float philox_uniform(PhiloxKey key, uint64_t index, uint32_t substream = 0);
// Standard normal for element `index` of the stream (Box-Muller on one Philox block).
float philox_normal(PhiloxKey key, uint64_t index, uint32_t substream = 0);

}  // namespace tensorpar
