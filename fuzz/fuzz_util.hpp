// Shared by the libFuzzer targets: the library's readers take paths, so each input is written to a
// file in one private temporary directory (on /dev/shm when it exists: no disk traffic per input).
// A target passes when the input is read or refused with a tensorpar::Error; anything else — another
// exception type escaping, a crash, a sanitizer report — is a bug that libFuzzer stops on.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace tensorpar::fuzz {

inline const std::string& temp_dir() {
  static const std::string dir = [] {
    std::string t = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + std::string("/tensorpar-fuzz.XXXXXX");
    if (!mkdtemp(t.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    return t;
  }();
  // removed at exit (libFuzzer exits through exit() after -max_total_time)
  static const struct Remover {
    ~Remover() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } remover;
  return dir;
}

// Writes bytes to temp_dir()/name and returns the full path.
inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::string path = temp_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  // fwrite with an empty view would pass a null pointer (UB): skip it
  if (!f || (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

inline void remove_file(const std::string& name) { std::remove((temp_dir() + "/" + name).c_str()); }

}  // namespace tensorpar::fuzz
