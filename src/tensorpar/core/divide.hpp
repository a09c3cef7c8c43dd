// divide(n, parts): the size of one part of an even split, refusing uneven splits (Megatron's rule).
#pragma once
#include <cstdint>
#include <string_view>

#include "tensorpar/core/error.hpp"

namespace tensorpar {

inline int64_t divide(int64_t n, int64_t parts, std::string_view what = "size") {
  TP_CHECK(parts > 0 && n % parts == 0, ShapeError,
           "{} {} cannot be split evenly over {} tensor-parallel ranks; choose a size divisible by {}",
           what, n, parts, parts);
  return n / parts;
}

}  // namespace tensorpar
