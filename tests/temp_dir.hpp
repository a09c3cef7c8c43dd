// A temporary directory with the same path on every rank (rank 0 creates it, then broadcasts).
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar::testing {

class SharedTempDir {
 public:
  explicit SharedTempDir(ProcessGroup& group) : group_(group) {
    if (group.rank() == 0) {
      std::string pattern = (std::filesystem::temp_directory_path() / "tensorpar_test_XXXXXX").string();
      path_ = ::mkdtemp(pattern.data()) ? pattern : "";
    }
    group.broadcast_string(path_, 0);
  }
  ~SharedTempDir() {
    group_.barrier();
    if (group_.rank() == 0 && !path_.empty()) std::filesystem::remove_all(path_);
  }
  std::string path(const std::string& name = "") const { return name.empty() ? path_ : path_ + "/" + name; }

 private:
  ProcessGroup& group_;
  std::string path_;
};

// A small English text corpus (200 lines of `line` plus a varying digit) written by rank 0 into `dir`,
// visible to every rank on return: the training tests' data.
inline std::string write_corpus(ProcessGroup& world, const SharedTempDir& dir,
                                const std::string& line = "the quick brown fox jumps over the lazy dog ",
                                int modulus = 7, const std::string& tail = ". a stitch in time saves nine.\n") {
  const std::string path = dir.path("corpus.txt");
  if (world.rank() == 0) {
    std::ofstream out(path);
    for (int i = 0; i < 200; ++i) out << line << (i % modulus) << tail;
  }
  world.barrier();
  return path;
}

}  // namespace tensorpar::testing
