// Reading tokenizer files (see the header).
#include "tensorpar/io/tokenizer_json.hpp"

#include <fstream>
#include <sstream>

#include "tensorpar/core/error.hpp"

namespace tensorpar::io {

std::string read_tokenizer_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TP_CHECK(in, IoError, "{}: cannot open tokenizer file; check the model directory", path);
  std::stringstream buf;
  buf << in.rdbuf();
  TP_CHECK(!in.bad(), IoError, "{}: read error", path);
  return buf.str();
}

nlohmann::json parse_tokenizer_json(const std::string& path) {
  const std::string text = read_tokenizer_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: not valid JSON ({}); re-download the tokenizer file", path, e.what()));
  }
}

void read_bpe_model(const nlohmann::json& model, const std::string& source, BpeModel& bpe) {
  TP_CHECK(model.contains("vocab") && model["vocab"].is_object(), IoError, "{}: model.vocab is not an object", source);
  for (const auto& [token, id] : model["vocab"].items()) {
    TP_CHECK(id.is_number_integer(), IoError, "{}: model.vocab token '{}' has id {}, not an integer", source, token,
             id.dump());
    bpe.add_token(source, token, id.get<int64_t>());
  }
  TP_CHECK(model.contains("merges") && model["merges"].is_array(), IoError, "{}: model.merges is not an array", source);
  size_t k = 0;
  for (const auto& m : model["merges"]) {
    if (m.is_string()) {  // older format: "a b"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      TP_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
               IoError, "{}: model.merges[{}] '{}' is not 'a b'", source, k, s);
      bpe.add_merge(source, k, s.substr(0, sp), s.substr(sp + 1));
    } else {  // newer format: ["a", "b"]
      TP_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), IoError,
               "{}: model.merges[{}] is {}, neither 'a b' nor [\"a\", \"b\"]", source, k, m.dump());
      bpe.add_merge(source, k, m[0].get<std::string>(), m[1].get<std::string>());
    }
    ++k;
  }
}

}  // namespace tensorpar::io
