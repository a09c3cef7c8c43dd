#include "tensorpar/core/rng.hpp"

#include <cmath>
#include <numbers>

namespace tensorpar {

PhiloxKey philox_key(uint64_t seed, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  // splitmix64 of seed, xor-ed in so that nearby seeds give unrelated keys
  uint64_t z = seed + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  h ^= z;
  return {uint32_t(h), uint32_t(h >> 32)};
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, PhiloxKey key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kM0) * c[0], p1 = uint64_t(kM1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k1, uint32_t(p0)};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

float philox_uniform(PhiloxKey key, uint64_t index, uint32_t substream) {
  const auto r = philox4x32_10({uint32_t(index), uint32_t(index >> 32), substream, 0}, key);
  return float(r[0] >> 8) * (1.0f / 16777216.0f);
}

float philox_normal(PhiloxKey key, uint64_t index, uint32_t substream) {
  const auto r = philox4x32_10({uint32_t(index), uint32_t(index >> 32), substream, 1}, key);
  // u1 in (0, 1] so the log is finite; u2 in [0, 1)
  const double u1 = (double(r[0]) + 1.0) * (1.0 / 4294967296.0);
  const double u2 = double(r[1]) * (1.0 / 4294967296.0);
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
}

}  // namespace tensorpar
