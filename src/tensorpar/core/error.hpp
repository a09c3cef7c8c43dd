// Errors and check macros. The library throws; only main() decides how a process ends.
// Messages are written for the user: what is wrong and how to fix it, in one line.
#pragma once
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdexcept>
#include <string>

namespace tensorpar {

// Base of everything tensorpar throws on purpose.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};
// A shape, size or split that does not fit (wrong dims, TP degree that does not divide a size).
class ShapeError : public Error {
 public:
  using Error::Error;
};
// A file that is missing, truncated, corrupt or of the wrong format.
class IoError : public Error {
 public:
  using Error::Error;
};
// A configuration or command-line value that is out of range or inconsistent.
class ConfigError : public Error {
 public:
  using Error::Error;
};
// A failed MPI call or a failure reported by another rank.
class CommError : public Error {
 public:
  using Error::Error;
};

}  // namespace tensorpar

// TP_CHECK(cond, ErrorType, "fmt", args...): throw ErrorType with the formatted message if !cond.
#define TP_CHECK(cond, ErrorType, ...)                          \
  do {                                                          \
    if (!(cond)) [[unlikely]] throw ErrorType(fmt::format(__VA_ARGS__)); \
  } while (0)

// TP_CHECK_EQ(a, b, "what"): internal consistency check that prints both values and the place.
#define TP_CHECK_EQ(a, b, what)                                                                  \
  do {                                                                                           \
    const auto& tp_a_ = (a);                                                                     \
    const auto& tp_b_ = (b);                                                                     \
    if (!(tp_a_ == tp_b_)) [[unlikely]]                                                          \
      throw ::tensorpar::ShapeError(fmt::format("{}: {} is {} but {} is {} ({}:{})", what, #a,   \
                                                tp_a_, #b, tp_b_, __FILE__, __LINE__));          \
  } while (0)
