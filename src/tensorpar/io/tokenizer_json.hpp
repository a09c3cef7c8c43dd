// Reading tokenizer files: whole text files, JSON with the file named in the error, and the
// model.vocab / model.merges of a Hugging Face tokenizer.json into a BpeModel (both merge formats).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/bpe_tokenizer_model.hpp"

namespace tensorpar::io {

std::string read_tokenizer_file(const std::string& path);          // IoError if unreadable
nlohmann::json parse_tokenizer_json(const std::string& path);      // IoError if unreadable or not JSON
// model.vocab then model.merges ("a b" strings or ["a", "b"] pairs); IoError naming `source` if malformed.
void read_bpe_model(const nlohmann::json& model, const std::string& source, BpeModel& bpe);
// The added_tokens array (each {"id", "content"}); calls add(content, id) for each.
template <class Add>
void read_added_tokens(const nlohmann::json& j, const std::string& source, Add&& add);
// Runs read(): a value of the wrong JSON type deep in the file ({"model": {"type": 1}},
// "use_regex": "yes") makes nlohmann's value()/get() throw type_error; that is a malformed file like
// any other, so it becomes an IoError naming `source` (found by fuzz/fuzz_tokenizer).
template <class Read>
auto with_json_errors(const std::string& source, Read&& read) {
  try {
    return read();
  } catch (const nlohmann::json::exception& e) {
    throw IoError(fmt::format("{}: unexpected JSON structure ({}); re-download the tokenizer file", source, e.what()));
  }
}

template <class Add>
void read_added_tokens(const nlohmann::json& j, const std::string& source, Add&& add) {
  const auto it = j.find("added_tokens");
  if (it == j.end() || it->is_null()) return;
  TP_CHECK(it->is_array(), IoError, "{}: added_tokens is not an array", source);
  for (const auto& a : *it) {
    TP_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                 a["content"].is_string() && !a["content"].get<std::string>().empty(),
             IoError, "{}: added_tokens entry {} has no integer 'id' and non-empty string 'content'", source, a.dump());
    add(a["content"].get<std::string>(), a["id"].get<int64_t>());
  }
}

}  // namespace tensorpar::io
