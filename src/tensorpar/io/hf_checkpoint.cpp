#include "tensorpar/io/hf_checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/sharded_safetensors.hpp"
#include "tensorpar/io/strict_json.hpp"

namespace tensorpar::io {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// GPT-2 stores its linear layers as Conv1D, [in, out].
bool is_conv1d(const std::string& name) {
  return ends_with(name, "attn.c_attn.weight") || ends_with(name, "attn.c_proj.weight") ||
         ends_with(name, "mlp.c_fc.weight") || ends_with(name, "mlp.c_proj.weight");
}

Shape piece_shape(const Parameter& p, int64_t rows, bool transposed) {
  if (p.global_shape.size() == 1) return {rows};
  const int64_t cols = p.global_shape[1];
  return transposed ? Shape{cols, rows} : Shape{rows, cols};
}

HfPiece piece(const Parameter& p, std::string key, int64_t row_start, int64_t rows, bool transposed = false) {
  return {std::move(key), row_start, rows, transposed, piece_shape(p, rows, transposed)};
}

}  // namespace

std::vector<HfPiece> hf_pieces(const ModelConfig& c, const Parameter& p) {
  const std::string& n = p.name;
  const int64_t rows = p.global_shape[0];
  // embeddings and untied heads: the padded vocabulary rows are not saved
  if (n == "wte.weight" || n == "model.embed_tokens.weight" || n == "lm_head.weight")
    return {piece(p, n, 0, c.vocab_size)};
  if (c.family == ModelFamily::Gpt2) return {piece(p, n, 0, rows, is_conv1d(n))};
  const int64_t q = c.heads * c.head_dim(), kv = c.kv_heads_or_heads() * c.head_dim(), f = c.ffn_or_default();
  if (ends_with(n, "self_attn.qkv_proj.weight")) {
    const std::string prefix = n.substr(0, n.size() - std::string("qkv_proj.weight").size());
    return {piece(p, prefix + "q_proj.weight", 0, q), piece(p, prefix + "k_proj.weight", q, kv),
            piece(p, prefix + "v_proj.weight", q + kv, kv)};
  }
  if (ends_with(n, "mlp.gate_up_proj.weight")) {
    const std::string prefix = n.substr(0, n.size() - std::string("gate_up_proj.weight").size());
    return {piece(p, prefix + "gate_proj.weight", 0, f), piece(p, prefix + "up_proj.weight", f, f)};
  }
  return {piece(p, n, 0, rows)};
}

ModelConfig read_model_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  TP_CHECK(std::ifstream(path).good(), IoError, "{}: cannot open the model config (is {} a model directory?)", path,
           dir);
  return ModelConfig::from_hf_json(read_strict_json(path), path);
}

namespace {

// Checks that the file tensor exists with the expected shape; IoError naming file and key.
void check_piece(const CheckpointFiles& files, const HfPiece& piece) {
  const SafetensorsFile& file = files.file_for(piece.key);
  const StTensorInfo& info = file.info(piece.key);
  TP_CHECK(info.shape == piece.file_shape, IoError, "{}: tensor '{}' has shape {} but the model config needs {}",
           file.path(), piece.key, shape_string(info.shape), shape_string(piece.file_shape));
  TP_CHECK(info.dtype == StDType::F32 || info.dtype == StDType::F16 || info.dtype == StDType::BF16, IoError,
           "{}: tensor '{}' has dtype {}; only F32, F16 and BF16 weights can be loaded", file.path(), piece.key,
           st_dtype_name(info.dtype));
}

void load_parameter(const CheckpointFiles& files, const ModelConfig& config, Parameter& p) {
  const auto pieces = hf_pieces(config, p);
  for (const HfPiece& piece : pieces) check_piece(files, piece);
  float* dst = p.value.f32();
  p.value.zero();  // vocabulary padding stays zero
  const bool one_d = p.global_shape.size() == 1;
  const int64_t cols = one_d ? 1 : p.value.dim(1);
  if (p.replicated()) {
    const HfPiece& piece = pieces.at(0);
    const SafetensorsFile& f = files.file_for(piece.key);
    if (one_d)
      f.read_block(piece.key, 0, 1, 0, p.value.numel(), dst, p.value.numel());
    else
      f.read_block(piece.key, 0, piece.rows, 0, cols, dst, cols);
    return;
  }
  if (p.shard_dim == 0) {
    for (const ShardBlock& block : p.blocks)
      for (const HfPiece& piece : pieces) {
        const int64_t a = std::max(block.global_start, piece.row_start);
        const int64_t b = std::min(block.global_start + block.length, piece.row_start + piece.rows);
        if (a >= b) continue;
        const SafetensorsFile& f = files.file_for(piece.key);
        const int64_t local_row = block.local_start + a - block.global_start, file_row = a - piece.row_start;
        if (one_d)
          f.read_block(piece.key, 0, 1, file_row, b - a, dst + local_row, b - a);
        else if (piece.transposed)  // file [cols, rows]: dst(j, i) = F(i, file_row + j)
          f.read_block_transposed(piece.key, 0, cols, file_row, b - a, dst + local_row * cols, cols);
        else
          f.read_block(piece.key, file_row, b - a, 0, cols, dst + local_row * cols, cols);
      }
    return;
  }
  // shard_dim 1: a row-parallel weight [out, in] split along in
  const HfPiece& piece = pieces.at(0);
  const SafetensorsFile& f = files.file_for(piece.key);
  const int64_t out = p.value.dim(0), in_pp = p.value.dim(1);
  for (const ShardBlock& block : p.blocks) {
    if (piece.transposed)  // file [in, out]: dst(j, i) = F(global_start + i, j)
      f.read_block_transposed(piece.key, block.global_start, block.length, 0, out, dst + block.local_start, in_pp);
    else
      f.read_block(piece.key, 0, out, block.global_start, block.length, dst + block.local_start, in_pp);
  }
}

}  // namespace

void load_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir) {
  std::string error;
  try {
    const CheckpointFiles files = CheckpointFiles::open_dir(dir);
    for (Parameter* p : model.parameters()) load_parameter(files, model.config(), *p);
  } catch (const Error& e) {
    error = e.what();
  }
  tp.agree<IoError>(error);
}

namespace {

// Writes this rank's part of one parameter into the file laid out by `plan`.
void write_parameter(int fd, const SafetensorsPlan& plan, const ModelConfig& config, const Parameter& p, int tp_rank) {
  auto pwrite_floats = [&](const float* data, int64_t count, uint64_t offset, const std::string& key) {
    const auto* bytes = reinterpret_cast<const char*>(data);
    size_t left = size_t(count) * sizeof(float);
    while (left > 0) {
      const ssize_t n = ::pwrite(fd, bytes, left, off_t(offset));
      TP_CHECK(n > 0, IoError, "writing tensor '{}' failed: {}", key, std::strerror(errno));
      bytes += n;
      left -= size_t(n);
      offset += uint64_t(n);
    }
  };
  const auto pieces = hf_pieces(config, p);
  const float* src = p.value.f32();
  const bool one_d = p.global_shape.size() == 1;
  const int64_t cols = one_d ? 1 : p.value.dim(1);
  std::vector<float> buffer;
  if (p.replicated()) {
    if (tp_rank != 0) return;  // identical on every rank: written once
    const HfPiece& piece = pieces.at(0);
    pwrite_floats(src, shape_numel(piece.file_shape), plan.offset(piece.key), piece.key);
    return;
  }
  if (p.shard_dim == 0) {
    for (const ShardBlock& block : p.blocks)
      for (const HfPiece& piece : pieces) {
        if (!block.primary) continue;  // a replicated GQA key/value head: written by its first holder only
        const int64_t a = std::max(block.global_start, piece.row_start);
        const int64_t b = std::min(block.global_start + block.length, piece.row_start + piece.rows);
        if (a >= b) continue;
        const int64_t local_row = block.local_start + a - block.global_start, file_row = a - piece.row_start;
        const uint64_t base = plan.offset(piece.key);
        if (one_d) {
          pwrite_floats(src + local_row, b - a, base + uint64_t(file_row) * 4, piece.key);
        } else if (!piece.transposed) {
          pwrite_floats(src + local_row * cols, (b - a) * cols, base + uint64_t(file_row * cols) * 4, piece.key);
        } else {  // file [cols, piece.rows]: each file row i gets our column i of rows a..b
          buffer.resize(size_t(b - a));
          for (int64_t i = 0; i < cols; ++i) {
            for (int64_t j = 0; j < b - a; ++j) buffer[size_t(j)] = src[(local_row + j) * cols + i];
            pwrite_floats(buffer.data(), b - a, base + uint64_t(i * piece.rows + file_row) * 4, piece.key);
          }
        }
      }
    return;
  }
  const HfPiece& piece = pieces.at(0);
  const uint64_t base = plan.offset(piece.key);
  const int64_t out = p.value.dim(0), in_pp = p.value.dim(1), in = p.global_shape[1];
  for (const ShardBlock& block : p.blocks) {
    if (piece.transposed) {  // file [in, out]: rows global_start.. are contiguous
      buffer.resize(size_t(block.length * out));
      for (int64_t i = 0; i < block.length; ++i)
        for (int64_t o = 0; o < out; ++o) buffer[size_t(i * out + o)] = src[o * in_pp + block.local_start + i];
      pwrite_floats(buffer.data(), block.length * out, base + uint64_t(block.global_start * out) * 4, piece.key);
    } else {  // file [out, in]: a run of columns in every row
      for (int64_t o = 0; o < out; ++o)
        pwrite_floats(src + o * in_pp + block.local_start, block.length,
                      base + uint64_t(o * in + block.global_start) * 4, piece.key);
    }
  }
}

}  // namespace

void save_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir) {
  const ModelConfig& config = model.config();
  std::vector<StEntry> entries;
  for (const Parameter* p : model.parameters())
    for (const HfPiece& piece : hf_pieces(config, *p)) entries.push_back({piece.key, StDType::F32, piece.file_shape});
  const SafetensorsPlan plan(std::move(entries), {{"format", "pt"}});
  const std::string path = (std::filesystem::path(dir) / "model.safetensors").string();

  // rank 0 lays the file out (header, full size) under a temporary name that the others then fill
  std::string error, tmp_path;
  std::unique_ptr<AtomicFile> file;
  if (tp.rank() == 0) {
    try {
      std::filesystem::create_directories(dir);
      file = std::make_unique<AtomicFile>(path);
      file->write(plan.header());
      file->pwrite(std::as_bytes(std::span("", 1)), plan.file_size() - 1);  // extend to the full size
      tmp_path = file->tmp_path();
    } catch (const std::exception& e) {
      error = fmt::format("cannot write {}: {}", path, e.what());
    }
  }
  tp.agree<IoError>(error);
  tp.broadcast_string(tmp_path, 0);
  try {
    const int fd = ::open(tmp_path.c_str(), O_WRONLY);
    TP_CHECK(fd >= 0, IoError, "cannot open {} for writing: {}", tmp_path, std::strerror(errno));
    try {
      for (const Parameter* p : model.parameters()) write_parameter(fd, plan, config, *p, tp.rank());
    } catch (...) {
      ::close(fd);
      throw;
    }
    TP_CHECK(::fsync(fd) == 0 && ::close(fd) == 0, IoError, "cannot flush {}: {}", tmp_path, std::strerror(errno));
  } catch (const std::exception& e) {
    error = e.what();
  }
  tp.agree<IoError>(error);
  if (tp.rank() == 0) {
    try {
      file->commit();
      AtomicFile json((std::filesystem::path(dir) / "config.json").string());
      json.write(config.to_hf_json().dump(2) + "\n");
      json.commit();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  tp.agree<IoError>(error);
}

}  // namespace tensorpar::io
