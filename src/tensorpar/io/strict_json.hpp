// JSON from files we did not write (config.json, model.safetensors.index.json): parsed with every
// object's keys required to be unique. nlohmann keeps the last of two equal keys silently, so a
// weight_map naming a tensor twice, or a config with two vocab sizes, would load one of them unnoticed.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace tensorpar::io {

// IoError "<where>: not valid JSON (...)" or "<where>: key '<k>' appears twice in one object".
nlohmann::json parse_strict_json(std::string_view text, const std::string& where);
// The whole file through parse_strict_json; IoError if it cannot be read.
nlohmann::json read_strict_json(const std::string& path);

}  // namespace tensorpar::io
