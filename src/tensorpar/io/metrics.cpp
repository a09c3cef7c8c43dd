// MetricsWriter and read_metrics: the JSON-lines metrics file.
#include "tensorpar/io/metrics.hpp"

#include <nlohmann/json.hpp>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

MetricsWriter::MetricsWriter(const std::string& path, bool append)
    : path_(path), out_(path, append ? std::ios::app : std::ios::trunc) {
  TP_CHECK(out_.is_open(), IoError, "{}: cannot open metrics file for writing; check the output directory exists",
           path_);
}

void MetricsWriter::write(const nlohmann::json& object) {
  // dump() escapes newlines inside strings, so a record is always exactly one line. Invalid UTF-8 in a
  // string is replaced rather than throwing in the middle of training.
  out_ << object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  out_.flush();
  TP_CHECK(out_.good(), IoError, "{}: writing metrics failed; check free disk space", path_);
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::ifstream in(path);
  TP_CHECK(in.is_open(), IoError, "{}: cannot open metrics file; check the path", path);
  std::vector<nlohmann::json> records;
  std::string line;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw IoError(fmt::format("{}: line {} is not valid JSON ({}); fix or delete that line", path, line_no, e.what()));
    }
    TP_CHECK(j.is_object(), IoError, "{}: line {} is a JSON {}, not an object; fix or delete that line", path, line_no,
             j.type_name());
    records.push_back(std::move(j));
  }
  return records;
}

}  // namespace tensorpar::io
