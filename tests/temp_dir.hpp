// A temporary directory with the same path on every rank (rank 0 creates it, then broadcasts).
#pragma once
#include <cstdlib>
#include <filesystem>
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

}  // namespace tensorpar::testing
