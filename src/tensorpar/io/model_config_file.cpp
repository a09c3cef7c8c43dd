#include "tensorpar/io/model_config_file.hpp"

#include <filesystem>
#include <fstream>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/strict_json.hpp"

namespace tensorpar::io {

ModelConfig read_model_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  TP_CHECK(std::ifstream(path).good(), IoError, "{}: cannot open the model config (is {} a model directory?)", path,
           dir);
  return ModelConfig::from_hf_json(read_strict_json(path), path);
}

}  // namespace tensorpar::io
