// Safetensors reading, validation, layout planning and writing. Every size and offset from the file
// is checked (with overflow-checked arithmetic) before any byte of tensor data is touched.
#include "tensorpar/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tensorpar/core/bf16.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/strict_json.hpp"

namespace tensorpar::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is this host");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the Hugging Face reader's limit

constexpr StDType kAllDTypes[] = {StDType::F64, StDType::F32, StDType::F16, StDType::BF16, StDType::I64,
                                  StDType::I32, StDType::I16, StDType::I8,  StDType::U8,   StDType::BOOL};

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool checked_add(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_add_overflow(a, b, &out); }

// Number of bytes of a tensor, or false if it does not fit in 64 bits.
// The product of the non-zero dims must fit too, so a [0, 2^40, 2^40] tensor cannot overflow the
// [rows, cols] view taken by read_block.
bool tensor_nbytes(const std::vector<int64_t>& shape, StDType dtype, uint64_t& out) {
  uint64_t n = st_dtype_size(dtype), nonzero = n;
  for (int64_t d : shape)
    if (d < 0 || !checked_mul(n, uint64_t(d), n) || !checked_mul(nonzero, uint64_t(std::max<int64_t>(d, 1)), nonzero) ||
        nonzero > uint64_t(INT64_MAX))
      return false;
  out = n;
  return true;
}

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Non-negative JSON integer that fits in int64 (nlohmann parses non-negative integers as unsigned).
bool json_to_u63(const nlohmann::json& j, uint64_t& out) {
  if (!j.is_number_unsigned()) return false;
  out = j.get<uint64_t>();
  return out <= uint64_t(INT64_MAX);
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Convert n elements of an F32/F16/BF16 row starting at src into dst[k * stride].
void convert_row(const std::byte* src, StDType dtype, int64_t n, float* dst, int64_t stride) {
  switch (dtype) {
    case StDType::F32:
      if (stride == 1) {
        std::memcpy(dst, src, size_t(n) * 4);
      } else {
        for (int64_t k = 0; k < n; ++k) std::memcpy(dst + k * stride, src + k * 4, 4);
      }
      break;
    case StDType::BF16:
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, src + k * 2, 2);
        dst[k * stride] = bf16_to_float(bf16{h});
      }
      break;
    case StDType::F16:
      for (int64_t k = 0; k < n; ++k) {
        uint16_t h;
        std::memcpy(&h, src + k * 2, 2);
        dst[k * stride] = f16_to_float(h);
      }
      break;
    default:
      break;  // rejected by check_block
  }
}

}  // namespace

size_t st_dtype_size(StDType dtype) {
  switch (dtype) {
    case StDType::F64: case StDType::I64: return 8;
    case StDType::F32: case StDType::I32: return 4;
    case StDType::F16: case StDType::BF16: case StDType::I16: return 2;
    case StDType::I8: case StDType::U8: case StDType::BOOL: return 1;
  }
  return 0;
}

const char* st_dtype_name(StDType dtype) {
  switch (dtype) {
    case StDType::F64: return "F64";
    case StDType::F32: return "F32";
    case StDType::F16: return "F16";
    case StDType::BF16: return "BF16";
    case StDType::I64: return "I64";
    case StDType::I32: return "I32";
    case StDType::I16: return "I16";
    case StDType::I8: return "I8";
    case StDType::U8: return "U8";
    case StDType::BOOL: return "BOOL";
  }
  return "?";
}

StDType parse_st_dtype(std::string_view name, std::string_view context) {
  for (StDType t : kAllDTypes)
    if (name == st_dtype_name(t)) return t;
  throw IoError(fmt::format("{}: unknown dtype '{}'; expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL",
                            context, name));
}

// ---------------------------------------------------------------------------------------------------
// Reading

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.map_ = MappedFile::open(path);
  const uint64_t size = f.map_.size();
  TP_CHECK(size > 0, IoError, "{}: file is empty; expected a safetensors file (re-save or re-download it)", path);
  TP_CHECK(size >= 8, IoError, "{}: file is {} bytes, shorter than the 8-byte header length; the file is truncated",
           path, size);
  const uint64_t n = read_u64_le(f.map_.data());
  TP_CHECK(n <= size - 8, IoError,
           "{}: header length {} runs past the end of the {}-byte file; the file is truncated or not safetensors", path,
           n, size);
  TP_CHECK(n <= kMaxHeaderBytes, IoError, "{}: header length {} exceeds the {}-byte limit; not a safetensors file",
           path, n, kMaxHeaderBytes);
  TP_CHECK(n >= 2, IoError, "{}: header length {} is too short for a JSON object; not a safetensors file", path, n);
  f.data_start_ = 8 + n;
  const uint64_t data_size = size - f.data_start_;

  const char* text = reinterpret_cast<const char*>(f.map_.data() + 8);
  // a tensor named twice would otherwise be read from the last of its entries
  const nlohmann::json header = parse_strict_json(std::string_view(text, size_t(n)), path + " header");
  TP_CHECK(header.is_object(), IoError, "{}: header JSON is a {}, not an object; the file is corrupt", path,
           header.type_name());

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      TP_CHECK(value.is_object(), IoError, "{}: '__metadata__' is a {}, not an object of strings", path,
               value.type_name());
      for (const auto& [mk, mv] : value.items()) {
        TP_CHECK(mv.is_string(), IoError, "{}: '__metadata__' key '{}' is a {}, not a string", path, mk,
                 mv.type_name());
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("{}: tensor '{}'", path, key);
    TP_CHECK(value.is_object(), IoError, "{} is a {}, not an object with dtype/shape/data_offsets", where,
             value.type_name());
    StTensorInfo t;
    t.name = key;
    const auto dt = value.find("dtype");
    TP_CHECK(dt != value.end() && dt->is_string(), IoError, "{} has no string 'dtype'", where);
    t.dtype = parse_st_dtype(dt->get<std::string>(), where);

    const auto sh = value.find("shape");
    TP_CHECK(sh != value.end() && sh->is_array(), IoError, "{} has no 'shape' array", where);
    for (const auto& d : *sh) {
      uint64_t v;
      TP_CHECK(json_to_u63(d, v), IoError, "{} has shape entry {} that is not a non-negative integer", where,
               d.dump());
      t.shape.push_back(int64_t(v));
    }
    const auto off = value.find("data_offsets");
    TP_CHECK(off != value.end() && off->is_array() && off->size() == 2, IoError,
             "{} has no 'data_offsets' [begin, end] pair", where);
    TP_CHECK(json_to_u63((*off)[0], t.begin) && json_to_u63((*off)[1], t.end), IoError,
             "{} has data_offsets {} that are not non-negative integers", where, off->dump());
    TP_CHECK(t.begin <= t.end, IoError, "{} has data offsets [{}, {}) with end before begin; the file is corrupt",
             where, t.begin, t.end);
    uint64_t expected;
    TP_CHECK(tensor_nbytes(t.shape, t.dtype, expected), IoError, "{} has shape {} whose byte size overflows", where,
             shape_str(t.shape));
    TP_CHECK(t.end - t.begin == expected, IoError,
             "{} has data offsets [{}, {}) = {} bytes but shape {} of {} needs {} bytes; the header is corrupt", where,
             t.begin, t.end, t.end - t.begin, shape_str(t.shape), st_dtype_name(t.dtype), expected);
    TP_CHECK(t.end <= data_size, IoError,
             "{} has data offsets [{}, {}) past the end of the {}-byte data section; the file is truncated", where,
             t.begin, t.end, data_size);
    auto [it, inserted] = f.tensors_.emplace(key, std::move(t));
    ranges.push_back({it->second.begin, it->second.end, &it->first});
  }

  // The tensors must cover the data section exactly, as Hugging Face's reader requires: contiguous in
  // offset order, no overlap, no hole, nothing after the last one. A file with one stray byte would
  // otherwise load with every weight read from the wrong place (empty tensors occupy no bytes).
  std::erase_if(ranges, [](const Range& r) { return r.begin == r.end; });
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    TP_CHECK(ranges[i].begin >= covered, IoError,
             "{}: tensor '{}' at data offsets [{}, {}) overlaps tensor '{}' at [{}, {}); the header is corrupt", path,
             *ranges[i].name, ranges[i].begin, ranges[i].end, *ranges[i - 1].name, ranges[i - 1].begin,
             ranges[i - 1].end);
    TP_CHECK(ranges[i].begin == covered, IoError,
             "{}: data bytes [{}, {}) before tensor '{}' belong to no tensor; the tensors must cover the data section "
             "contiguously (the file is corrupt or was written by a broken tool)",
             path, covered, ranges[i].begin, *ranges[i].name);
    covered = ranges[i].end;
  }
  TP_CHECK(covered == data_size, IoError,
           "{}: the data section is {} bytes but its tensors cover {}; {} bytes belong to no tensor (the file is "
           "corrupt or shifted; re-save or re-download it)",
           path, data_size, covered, data_size - covered);
  return f;
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  TP_CHECK(it != tensors_.end(), IoError,
           "{}: missing tensor '{}' ({} tensors present); check the model architecture/config matches the checkpoint",
           path_, name, tensors_.size());
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, t] : tensors_) out.push_back(name);
  return out;
}

const std::byte* SafetensorsFile::data(const std::string& name) const {
  return map_.data() + data_start_ + info(name).begin;
}

int64_t SafetensorsFile::check_block(const StTensorInfo& t, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                                     int64_t ld_dst, int64_t dst_cols) const {
  TP_CHECK(t.dtype == StDType::F32 || t.dtype == StDType::F16 || t.dtype == StDType::BF16, IoError,
           "{}: tensor '{}' has dtype {}; only F32, F16 and BF16 tensors can be read as float", path_, t.name,
           st_dtype_name(t.dtype));
  const int64_t rows = t.shape.empty() ? 1 : (t.shape.size() == 1 ? 1 : t.shape[0]);
  int64_t cols = 1;
  for (size_t d = t.shape.size() == 1 ? 0 : 1; d < t.shape.size(); ++d) cols *= t.shape[d];  // fits: checked on open
  TP_CHECK(row0 >= 0 && nrows >= 0 && row0 <= rows && nrows <= rows - row0 && col0 >= 0 && ncols >= 0 &&
               col0 <= cols && ncols <= cols - col0,
           ShapeError,
           "{}: tensor '{}' of shape {} viewed as [{}, {}] has no block rows [{}, {}+{}) cols [{}, {}+{}); the model "
           "config does not match the checkpoint",
           path_, t.name, shape_str(t.shape), rows, cols, row0, row0, nrows, col0, col0, ncols);
  TP_CHECK(ld_dst >= dst_cols, ShapeError, "{}: tensor '{}': destination stride {} is smaller than its {} columns",
           path_, t.name, ld_dst, dst_cols);
  return cols;
}

void SafetensorsFile::read_block(const std::string& name, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                                 float* dst, int64_t ld_dst) const {
  const StTensorInfo& t = info(name);
  const int64_t cols = check_block(t, row0, nrows, col0, ncols, ld_dst, ncols);
  const size_t es = st_dtype_size(t.dtype);
  const std::byte* base = map_.data() + data_start_ + t.begin;
  for (int64_t i = 0; i < nrows; ++i)
    convert_row(base + (uint64_t(row0 + i) * uint64_t(cols) + uint64_t(col0)) * es, t.dtype, ncols, dst + i * ld_dst, 1);
}

void SafetensorsFile::release(const std::string& name) const {
  const StTensorInfo& t = info(name);
  map_.release(data_start_ + t.begin, t.end - t.begin);
}

void SafetensorsFile::read_block_transposed(const std::string& name, int64_t row0, int64_t nrows, int64_t col0,
                                            int64_t ncols, float* dst, int64_t ld_dst) const {
  const StTensorInfo& t = info(name);
  const int64_t cols = check_block(t, row0, nrows, col0, ncols, ld_dst, nrows);
  const size_t es = st_dtype_size(t.dtype);
  const std::byte* base = map_.data() + data_start_ + t.begin;
  // Tiles of columns keep the strided destination writes within a few cache lines per source row.
  constexpr int64_t kTile = 64;
  for (int64_t j0 = 0; j0 < ncols; j0 += kTile) {
    const int64_t nj = std::min(kTile, ncols - j0);
    for (int64_t i = 0; i < nrows; ++i)
      convert_row(base + (uint64_t(row0 + i) * uint64_t(cols) + uint64_t(col0 + j0)) * es, t.dtype, nj,
                  dst + j0 * ld_dst + i, ld_dst);
  }
}

// ---------------------------------------------------------------------------------------------------
// Writing

SafetensorsPlan::SafetensorsPlan(std::vector<StEntry> entries, std::map<std::string, std::string> metadata)
    : entries_(std::move(entries)) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    j["__metadata__"] = std::move(m);
  }
  uint64_t pos = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const StEntry& e = entries_[i];
    TP_CHECK(!e.name.empty() && e.name != "__metadata__", ConfigError,
             "safetensors plan: tensor name '{}' is reserved or empty; rename the tensor", e.name);
    TP_CHECK(index_.emplace(e.name, i).second, ConfigError,
             "safetensors plan: tensor '{}' is listed twice; each name must be unique", e.name);
    uint64_t nb, end;
    TP_CHECK(tensor_nbytes(e.shape, e.dtype, nb) && checked_add(pos, nb, end), ConfigError,
             "safetensors plan: tensor '{}' has invalid shape {} (negative or too large)", e.name, shape_str(e.shape));
    offsets_.push_back(pos);
    nbytes_.push_back(nb);
    j[e.name] = {{"dtype", st_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {pos, end}}};
    pos = end;
  }
  std::string json;
  try {
    json = j.dump();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("safetensors plan: cannot serialise the header ({}); names must be valid UTF-8",
                                  e.what()));
  }
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the HF writer does
  const uint64_t n = json.size();
  header_.resize(8);
  std::memcpy(header_.data(), &n, 8);
  header_ += json;
  for (auto& off : offsets_) off += header_.size();
  file_size_ = header_.size() + pos;
}

size_t SafetensorsPlan::index(const std::string& name) const {
  const auto it = index_.find(name);
  TP_CHECK(it != index_.end(), ConfigError, "safetensors plan: no tensor '{}' in the plan", name);
  return it->second;
}
uint64_t SafetensorsPlan::offset(const std::string& name) const { return offsets_[index(name)]; }
uint64_t SafetensorsPlan::nbytes(const std::string& name) const { return nbytes_[index(name)]; }
const StEntry& SafetensorsPlan::entry(const std::string& name) const { return entries_[index(name)]; }

void write_safetensors(const std::string& path, const std::vector<StTensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<StEntry> entries;
  entries.reserve(tensors.size());
  for (const auto& t : tensors) entries.push_back({t.name, t.dtype, t.shape});
  const SafetensorsPlan plan(std::move(entries), metadata);
  for (const auto& t : tensors)
    TP_CHECK(t.bytes.size() == plan.nbytes(t.name), ConfigError,
             "{}: tensor '{}' has {} bytes of data but shape {} of {} needs {}", path, t.name, t.bytes.size(),
             shape_str(t.shape), st_dtype_name(t.dtype), plan.nbytes(t.name));
  AtomicFile file(path);
  file.write(plan.header());
  for (const auto& t : tensors) file.write(t.bytes);
  file.commit();
}

std::vector<std::byte> encode_floats(std::span<const float> values, StDType dtype) {
  std::vector<std::byte> out(values.size() * st_dtype_size(dtype));
  switch (dtype) {
    case StDType::F32:
      if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
      break;
    case StDType::BF16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t h = float_to_bf16(values[i]).bits;
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    case StDType::F16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t h = float_to_f16(values[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      break;
    default:
      throw ConfigError(fmt::format("encode_floats: cannot encode floats as {}; use F32, F16 or BF16",
                                    st_dtype_name(dtype)));
  }
  return out;
}

}  // namespace tensorpar::io
