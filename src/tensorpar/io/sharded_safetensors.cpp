// CheckpointFiles: open a single-file or sharded safetensors checkpoint and index its tensors.
#include "tensorpar/io/sharded_safetensors.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/strict_json.hpp"

namespace tensorpar::io {

namespace fs = std::filesystem;

CheckpointFiles CheckpointFiles::open_dir(const std::string& dir) {
  CheckpointFiles c;
  c.dir_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    const nlohmann::json j = read_strict_json(index.string());  // a tensor mapped twice is an error
    TP_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), IoError,
             "{}: no 'weight_map' object; expected {{\"weight_map\": {{\"tensor\": \"shard.safetensors\", ...}}}}",
             index.string());
    std::map<std::string, size_t> shard_index;  // shard file name -> index into files_
    for (const auto& [name, shard] : j["weight_map"].items()) {
      TP_CHECK(shard.is_string(), IoError, "{}: weight_map key '{}' maps to a {}, not a file name", index.string(),
               name, shard.type_name());
      const std::string file = shard.get<std::string>();
      const fs::path rel(file);
      TP_CHECK(!file.empty() && rel.is_relative() && rel.filename() == rel && file != "." && file != "..", IoError,
               "{}: weight_map key '{}' names shard '{}', which is not a plain file name in the same directory",
               index.string(), name, file);
      auto it = shard_index.find(file);
      if (it == shard_index.end()) {
        const fs::path shard_path = fs::path(dir) / rel;
        TP_CHECK(fs::exists(shard_path, ec), IoError,
                 "{}: shard '{}' (holding tensor '{}') is missing; download all shards listed in the index",
                 index.string(), shard_path.string(), name);
        c.files_.push_back(SafetensorsFile::open(shard_path.string()));
        it = shard_index.emplace(file, c.files_.size() - 1).first;
      }
      TP_CHECK(c.files_[it->second].contains(name), IoError,
               "{}: missing tensor '{}' which {} says it holds; the shard and the index disagree",
               c.files_[it->second].path(), name, index.filename().string());
      c.where_[name] = it->second;
    }
    return c;
  }
  TP_CHECK(fs::exists(single, ec), IoError,
           "{}: neither model.safetensors nor model.safetensors.index.json exists; point to a Hugging Face model "
           "directory (e.g. one downloaded with huggingface-cli)",
           dir);
  c.files_.push_back(SafetensorsFile::open(single.string()));
  for (const auto& name : c.files_[0].names()) c.where_[name] = 0;
  return c;
}

const SafetensorsFile& CheckpointFiles::file_for(const std::string& tensor_name) const {
  const auto it = where_.find(tensor_name);
  TP_CHECK(it != where_.end(), IoError,
           "{}: missing tensor '{}' ({} tensors in the checkpoint); check the model config matches the checkpoint",
           dir_, tensor_name, where_.size());
  return files_[it->second];
}

std::vector<std::string> CheckpointFiles::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, i] : where_) out.push_back(name);
  return out;
}

}  // namespace tensorpar::io
