#include "tensorpar/io/strict_json.hpp"

#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

nlohmann::json parse_strict_json(std::string_view text, const std::string& where) {
  std::vector<std::set<std::string>> keys;  // one set per object being parsed
  std::string duplicate;
  const auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON ({})", where, e.what()));
  }
  TP_CHECK(duplicate.empty(), IoError, "{}: key '{}' appears twice in one object; each key must be given once", where,
           duplicate);
  return j;
}

nlohmann::json read_strict_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TP_CHECK(in.good(), IoError, "{}: cannot open", path);
  std::stringstream buf;
  buf << in.rdbuf();
  TP_CHECK(!in.bad(), IoError, "{}: read error", path);
  return parse_strict_json(buf.str(), path);
}

}  // namespace tensorpar::io
