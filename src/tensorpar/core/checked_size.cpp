#include "tensorpar/core/checked_size.hpp"

#include <unistd.h>

namespace tensorpar {

int64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  int64_t bytes = 0;
  if (pages <= 0 || page <= 0 || __builtin_mul_overflow(int64_t(pages), int64_t(page), &bytes)) return INT64_MAX;
  return bytes;
}

void check_fits_in_memory(int64_t bytes, std::string_view what, std::string_view fix) {
  const int64_t limit = physical_memory_bytes();
  TP_CHECK(bytes <= limit, ConfigError, "{} needs {:.2f} GB but this machine has {:.2f} GB of memory; {}", what,
           double(bytes) / 1e9, double(limit) / 1e9, fix);
}

}  // namespace tensorpar
