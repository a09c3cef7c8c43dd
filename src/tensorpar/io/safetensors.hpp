// Hugging Face safetensors files: reading (memory-mapped, validated, sharded block reads with dtype
// conversion to float) and writing (a layout plan so several processes can pwrite their own slices
// into one file, plus a single-process writer).
//
// Format: 8-byte little-endian u64 header length N, then N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
// (possibly padded with trailing spaces), then the data; offsets are relative to the end of the header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensorpar/io/atomic_file.hpp"

namespace tensorpar::io {

enum class StDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
size_t st_dtype_size(StDType dtype);
const char* st_dtype_name(StDType dtype);
// `context` (e.g. "model.safetensors: tensor 'wte.weight'") starts the IoError message for an unknown name.
StDType parse_st_dtype(std::string_view name, std::string_view context = "safetensors");

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // byte range relative to the data start (the end of the header)
};

// Read-only view of one safetensors file (mmap PROT_READ, MAP_PRIVATE). The whole header is
// validated on open, so every later access stays inside the mapping. Move-only.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const StTensorInfo& info(const std::string& name) const;  // IoError "<file>: missing tensor '<name>' ..."
  std::vector<std::string> names() const;                   // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::byte* data(const std::string& name) const;     // start of that tensor's bytes (may be unaligned)

  // Read a block of a tensor viewed as a matrix [rows, cols] = [shape[0], prod(shape[1:])] (1-D: [1, n],
  // 0-D: [1, 1]), converting F32/F16/BF16 to float: dst(i, j) = T(row0 + i, col0 + j) for i < nrows,
  // j < ncols; dst row stride ld_dst. Only the requested bytes are touched, so each rank pages in just its shard.
  void read_block(const std::string& name, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float* dst,
                  int64_t ld_dst) const;
  // Same block written transposed: dst(j, i) = T(row0 + i, col0 + j) (HF Conv1D [in,out] into [out,in] shards).
  void read_block_transposed(const std::string& name, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                             float* dst, int64_t ld_dst) const;
  // Drops this process's mapped pages of that tensor (MappedFile::release): done reading it.
  void release(const std::string& name) const;

 private:
  // Checks the block against the tensor and returns the matrix column count.
  int64_t check_block(const StTensorInfo& t, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                      int64_t ld_dst, int64_t dst_cols) const;

  std::string path_;
  MappedFile map_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Layout planning for writing, so that several processes can each pwrite their own slices into one file.
struct StEntry {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
};

class SafetensorsPlan {
 public:
  // Data laid out contiguously in the given order; the JSON lists "__metadata__" first, then the
  // tensors in the same order. ConfigError on duplicate/empty names or negative dims.
  SafetensorsPlan(std::vector<StEntry> entries, std::map<std::string, std::string> metadata = {});

  const std::string& header() const { return header_; }  // 8-byte length + JSON padded with spaces to a multiple of 8
  uint64_t file_size() const { return file_size_; }
  uint64_t offset(const std::string& name) const;        // ABSOLUTE file offset of that tensor's first byte
  uint64_t nbytes(const std::string& name) const;        // that tensor's size in bytes
  const StEntry& entry(const std::string& name) const;
  const std::vector<StEntry>& entries() const { return entries_; }

 private:
  size_t index(const std::string& name) const;
  std::vector<StEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<uint64_t> offsets_, nbytes_;
  std::string header_;
  uint64_t file_size_ = 0;
};

// Single-process convenience writer (tests, small models): writes "<path>.tmp.<pid>" then renames.
struct StTensorData {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};
void write_safetensors(const std::string& path, const std::vector<StTensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Convert float data into F32/F16/BF16 little-endian bytes for writing (ConfigError for other dtypes).
std::vector<std::byte> encode_floats(std::span<const float> values, StDType dtype);

}  // namespace tensorpar::io
