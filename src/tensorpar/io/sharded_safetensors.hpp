// The tensors of a Hugging Face checkpoint directory: either one model.safetensors or a sharded set
// described by model.safetensors.index.json {"metadata": {...}, "weight_map": {"name": "model-00001-of-00002.safetensors", ...}}.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tensorpar/io/safetensors.hpp"

namespace tensorpar::io {

class CheckpointFiles {  // opens model.safetensors or the index + all shards; finds which file holds a tensor
 public:
  // IoError if neither file exists, the index is malformed, a shard is missing or lacks a tensor the index maps to it.
  static CheckpointFiles open_dir(const std::string& dir);

  const SafetensorsFile& file_for(const std::string& tensor_name) const;  // IoError "<dir>: missing tensor '<name>'"
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

}  // namespace tensorpar::io
