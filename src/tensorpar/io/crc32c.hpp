// CRC32C (Castagnoli), the checksum of every file in a training checkpoint: hardware-accelerated
// (SSE4.2 crc32 instruction, ~10 GB/s) where the CPU has it, a table otherwise. Same values as
// iSCSI / ext4 / Google's crc32c library: crc32c("123456789") == 0xE3069283.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace tensorpar::io {

// Continues `crc` (0 for a new checksum) over `bytes`.
uint32_t crc32c(std::span<const std::byte> bytes, uint32_t crc = 0);

// CRC32C and size of a whole file (memory-mapped); IoError if it cannot be read.
struct FileDigest {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};
FileDigest digest_file(const std::string& path);

}  // namespace tensorpar::io
