// Training metrics as JSON lines: one JSON object per line, flushed as it is written so a crashed or
// running job's metrics can be read (and plotted with loss_report.hpp) at any time.
#pragma once
#include <fstream>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace tensorpar::io {

class MetricsWriter {
 public:
  // Truncates the file, or appends to it with append = true (resuming a run). IoError if it cannot be opened.
  explicit MetricsWriter(const std::string& path, bool append = false);
  void write(const nlohmann::json& object);  // one line, flushed; IoError on a write failure
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Every non-blank line as a JSON object. IoError naming the file and line number on a malformed line.
std::vector<nlohmann::json> read_metrics(const std::string& path);

}  // namespace tensorpar::io
