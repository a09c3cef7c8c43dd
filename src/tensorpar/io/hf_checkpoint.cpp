#include "tensorpar/io/hf_checkpoint.hpp"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/crc32c.hpp"
#include "tensorpar/io/sharded_safetensors.hpp"

namespace tensorpar::io {

namespace fs = std::filesystem;

namespace {

// model.safetensors metadata: the CRC32C of the config.json written with it.
constexpr const char* kConfigCrcKey = "tensorpar_config_crc32c";

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

namespace {

// Which file holds a tensor: a sharded Hugging Face set, or one safetensors file.
using FileFor = std::function<const SafetensorsFile&(const std::string&)>;

// Checks that the file tensor exists with the expected shape; IoError naming file and key.
void check_piece(const FileFor& files, const HfPiece& piece) {
  const SafetensorsFile& file = files(piece.key);
  const StTensorInfo& info = file.info(piece.key);
  TP_CHECK(info.shape == piece.file_shape, IoError, "{}: tensor '{}' has shape {} but the model config needs {}",
           file.path(), piece.key, shape_string(info.shape), shape_string(piece.file_shape));
  TP_CHECK(info.dtype == StDType::F32 || info.dtype == StDType::F16 || info.dtype == StDType::BF16, IoError,
           "{}: tensor '{}' has dtype {}; only F32, F16 and BF16 weights can be loaded", file.path(), piece.key,
           st_dtype_name(info.dtype));
}

// Hugging Face pieces of a parameter, keyed `key + suffix` (suffix "" for the weights themselves).
std::vector<HfPiece> suffixed_pieces(const ModelConfig& config, const Parameter& p, const std::string& suffix) {
  auto pieces = hf_pieces(config, p);
  for (HfPiece& piece : pieces) piece.key += suffix;
  return pieces;
}

// Fills dst with local rows [row0, row0 + nrows) of p (its local shape; a 1-D parameter is one
// row of its length) from p's slices of the tensors `key + suffix`.
void load_rows(const FileFor& files, const ModelConfig& config, const Parameter& p, float* dst,
               const std::string& suffix, int64_t row0, int64_t nrows) {
  const auto pieces = suffixed_pieces(config, p, suffix);
  for (const HfPiece& piece : pieces) check_piece(files, piece);
  const Shape local = p.local_shape();
  const bool one_d = p.global_shape.size() == 1;
  const int64_t cols = one_d ? 1 : local[1];
  std::fill_n(dst, one_d ? local[0] : nrows * cols, 0.0f);  // vocabulary padding stays zero
  if (p.replicated()) {
    const HfPiece& piece = pieces.at(0);
    const SafetensorsFile& f = files(piece.key);
    if (one_d)
      f.read_block(piece.key, 0, 1, 0, local[0], dst, local[0]);
    else
      f.read_block(piece.key, row0, std::min(nrows, piece.rows - row0), 0, cols, dst, cols);
    return;
  }
  if (p.shard_dim == 0) {
    const int64_t end = one_d ? local[0] : row0 + nrows;  // 1-D: the whole vector
    const int64_t first = one_d ? 0 : row0;
    for (const ShardBlock& block : p.blocks)
      for (const HfPiece& piece : pieces) {
        const int64_t a = std::max(block.global_start, piece.row_start);
        const int64_t b = std::min(block.global_start + block.length, piece.row_start + piece.rows);
        if (a >= b) continue;
        // local rows of this run, clipped to the requested window
        const int64_t run = block.local_start + a - block.global_start;
        const int64_t lo = std::max(run, first), hi = std::min(run + (b - a), end);
        if (lo >= hi) continue;
        const SafetensorsFile& f = files(piece.key);
        const int64_t file_row = a - piece.row_start + (lo - run), n = hi - lo;
        float* out = dst + (lo - first) * cols;
        if (one_d)
          f.read_block(piece.key, 0, 1, file_row, n, out, n);
        else if (piece.transposed)  // file [cols, rows]: dst(j, i) = F(i, file_row + j)
          f.read_block_transposed(piece.key, 0, cols, file_row, n, out, cols);
        else
          f.read_block(piece.key, file_row, n, 0, cols, out, cols);
      }
    return;
  }
  // shard_dim 1: a row-parallel weight [out, in] split along in
  const HfPiece& piece = pieces.at(0);
  const SafetensorsFile& f = files(piece.key);
  const int64_t in_pp = local[1];
  for (const ShardBlock& block : p.blocks) {
    if (piece.transposed)  // file [in, out]: dst(j, i) = F(global_start + i, row0 + j)
      f.read_block_transposed(piece.key, block.global_start, block.length, row0, nrows, dst + block.local_start,
                              in_pp);
    else
      f.read_block(piece.key, row0, nrows, block.global_start, block.length, dst + block.local_start, in_pp);
  }
}

// Fills dst (p's local shape) with p's slices of the tensors `key + suffix`.
void load_parameter(const FileFor& files, const ModelConfig& config, const Parameter& p, float* dst,
                    const std::string& suffix) {
  const Shape local = p.local_shape();
  load_rows(files, config, p, dst, suffix, 0, local.size() == 1 ? 1 : local[0]);
}

// Done with p's file tensors: their mapped pages leave this process's resident memory.
void release_pieces(const FileFor& files, const ModelConfig& config, const Parameter& p) {
  for (const HfPiece& piece : hf_pieces(config, p)) files(piece.key).release(piece.key);
}

// Loads this rank's rows of a model parameter a few MB at a time, into `value` (its local values) or,
// if that is null, into `buffer` (one chunk), each chunk then handed to `take(row0, rows, data)`; drops the file's mapped pages after each chunk: the resident memory of loading is
// what the model keeps plus one chunk, not plus the mapped file tensor. 1-D parameters: one chunk.
constexpr int64_t kLoadChunkBytes = 4 << 20;
void load_chunked(const FileFor& files, const ModelConfig& config, const Parameter& p, float* value, float* buffer,
                  const std::function<void(int64_t, int64_t, float*)>& take) {
  const Shape local = p.local_shape();
  if (local.size() == 1) {
    float* dst = value ? value : buffer;
    load_rows(files, config, p, dst, "", 0, 1);
    take(0, 1, dst);
    return;
  }
  const int64_t rows = local[0], cols = local[1];
  const int64_t chunk = std::clamp<int64_t>(kLoadChunkBytes / (cols * int64_t(sizeof(float))), 1, rows);
  for (int64_t r = 0; r < rows; r += chunk) {
    const int64_t n = std::min(chunk, rows - r);
    float* dst = value ? value + r * cols : buffer;
    load_rows(files, config, p, dst, "", r, n);
    take(r, n, dst);
    release_pieces(files, config, p);
  }
}

// A weight the model keeps only quantized (TransformerOptions::weights): each chunk of rows is
// quantized and appended (blocks run along a row, so chunks of whole rows quantize exactly as the
// whole slice would); no f32 copy of the slice ever exists.
void load_quantized(const FileFor& files, TransformerLM& model, const Parameter& p) {
  const Shape local = p.local_shape();
  const int64_t rows = local.at(0), cols = local.at(1);
  Tensor buffer({std::clamp<int64_t>(kLoadChunkBytes / (cols * int64_t(sizeof(float))), 1, rows), cols});
  QuantizedWeight q;
  q.format = model.weight_format();
  q.rows = rows;
  q.cols = cols;
  load_chunked(files, model.config(), p, nullptr, buffer.f32(), [&](int64_t r, int64_t n, float* data) {
    QuantizedWeight part = quantize_weight(q.format, data, n, cols);
    if (r == 0) {
      q.scales.reserve(size_t(rows * part.blocks_per_row()));
      q.quants.reserve(size_t(rows) * part.quants.size() / size_t(n));
    }
    q.scales.insert(q.scales.end(), part.scales.begin(), part.scales.end());
    q.quants.insert(q.quants.end(), part.quants.begin(), part.quants.end());
  });
  model.install_quantized(p, std::move(q));
}

}  // namespace

namespace {

// A model.safetensors that records its config.json's checksum must sit beside that config.json.
void check_config_matches(const CheckpointFiles& files, const std::string& dir) {
  const auto names = files.names();
  if (names.empty()) return;
  const auto& meta = files.file_for(names.front()).metadata();
  const auto it = meta.find(kConfigCrcKey);
  if (it == meta.end()) return;  // written by another tool
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const FileDigest d = digest_file(config_path);
  TP_CHECK(fmt::format("{:08x}", d.crc32c) == it->second, IoError,
           "{}: config.json and model.safetensors come from different saves (an interrupted save?); save the model "
           "again or use a checkpoint directory (step_*) of the run",
           dir);
}

}  // namespace

void load_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir) {
  std::string error;
  try {
    const CheckpointFiles files = CheckpointFiles::open_dir(dir);
    const FileFor file_for = [&](const std::string& key) -> const SafetensorsFile& { return files.file_for(key); };
    for (Parameter* p : model.parameters()) {
      if (p->value.empty())  // kept only quantized
        load_quantized(file_for, model, *p);
      else
        load_chunked(file_for, model.config(), *p, p->value.f32(), nullptr, [](int64_t, int64_t, float*) {});
      release_pieces(file_for, model.config(), *p);
    }
    check_config_matches(files, dir);  // after the shape checks, which name the tensor that disagrees
  } catch (const Error& e) {
    error = e.what();
  }
  tp.agree<IoError>(error);
}

namespace {

// Writes this rank's part of one parameter into the file laid out by `plan`.
void write_parameter(int fd, const SafetensorsPlan& plan, const ModelConfig& config, const Parameter& p,
                     const float* src, const std::string& suffix, int tp_rank) {
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
  const auto pieces = suffixed_pieces(config, p, suffix);
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

namespace {

// Pipeline stages hold different tensors: every rank announces its own (name and shape), in rank
// order, and every rank builds the same list from them, each name once (the tensor-parallel ranks of
// a stage announce the same names). One broadcast per rank of the group; saving is rare.
std::vector<StEntry> gather_entries(ProcessGroup& group, const std::vector<StEntry>& mine) {
  std::string text;
  for (const StEntry& e : mine) {
    text += e.name;
    for (int64_t d : e.shape) text += fmt::format("\t{}", d);
    text += '\n';
  }
  std::vector<StEntry> all;
  std::set<std::string> seen;
  for (int r = 0; r < group.size(); ++r) {
    std::string theirs = group.rank() == r ? text : std::string();
    group.broadcast_string(theirs, r);
    std::istringstream lines(theirs);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      StEntry e{"", StDType::F32, {}};
      std::getline(fields, e.name, '\t');
      for (std::string d; std::getline(fields, d, '\t');) e.shape.push_back(std::stoll(d));
      if (seen.insert(e.name).second) all.push_back(std::move(e));
    }
  }
  return all;
}

}  // namespace

void save_parameter_tensors(ProcessGroup& tp, const ModelConfig& config, const std::vector<Parameter*>& parameters,
                            const std::vector<ParameterTensors>& sets, const std::string& path,
                            const std::map<std::string, std::string>& metadata, ProcessGroup* model_parallel) {
  std::vector<StEntry> entries;
  for (const ParameterTensors& set : sets)
    for (const Parameter* p : parameters)
      for (const HfPiece& piece : suffixed_pieces(config, *p, set.suffix))
        entries.push_back({piece.key, StDType::F32, piece.file_shape});
  ProcessGroup& group = model_parallel ? *model_parallel : tp;
  if (model_parallel) entries = gather_entries(group, entries);
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  const SafetensorsPlan plan(std::move(entries), meta);

  // rank 0 lays the file out (header, full size) under a temporary name that the others then fill
  std::string error, tmp_path;
  std::unique_ptr<AtomicFile> file;
  if (group.rank() == 0) {
    try {
      file = std::make_unique<AtomicFile>(path);
      file->write(plan.header());
      file->pwrite(std::as_bytes(std::span("", 1)), plan.file_size() - 1);  // extend to the full size
      tmp_path = file->tmp_path();
    } catch (const std::exception& e) {
      error = fmt::format("cannot write {}: {}", path, e.what());
    }
  }
  group.agree<IoError>(error);
  group.broadcast_string(tmp_path, 0);
  try {
    const int fd = ::open(tmp_path.c_str(), O_WRONLY);
    TP_CHECK(fd >= 0, IoError, "cannot open {} for writing: {}", tmp_path, std::strerror(errno));
    try {
      for (const ParameterTensors& set : sets)
        for (size_t i = 0; i < parameters.size(); ++i)
          write_parameter(fd, plan, config, *parameters[i], set.data(i), set.suffix, tp.rank());
    } catch (...) {
      ::close(fd);
      throw;
    }
    TP_CHECK(::fsync(fd) == 0 && ::close(fd) == 0, IoError, "cannot flush {}: {}", tmp_path, std::strerror(errno));
  } catch (const std::exception& e) {
    error = fmt::format("cannot write {}: {}", path, e.what());
  }
  group.agree<IoError>(error);
  if (group.rank() == 0) {
    try {
      file->commit();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  group.agree<IoError>(error);
}

void load_parameter_tensors(ProcessGroup& tp, const ModelConfig& config, const std::vector<Parameter*>& parameters,
                            const std::vector<ParameterTensors>& sets, const std::string& path) {
  std::string error;
  try {
    const SafetensorsFile file = SafetensorsFile::open(path);
    const FileFor file_for = [&](const std::string&) -> const SafetensorsFile& { return file; };
    for (const ParameterTensors& set : sets)
      for (size_t i = 0; i < parameters.size(); ++i)
        load_parameter(file_for, config, *parameters[i], set.data(i), set.suffix);
  } catch (const Error& e) {
    error = e.what();
  }
  tp.agree<IoError>(error);
}

std::string config_json_text(const ModelConfig& config) { return config.to_hf_json().dump(2) + "\n"; }

void write_hf_files(ProcessGroup& tp, TransformerLM& model, const std::string& dir, ProcessGroup* model_parallel) {
  const std::string config_text = config_json_text(model.config());
  const std::string config_crc = fmt::format("{:08x}", crc32c(std::as_bytes(std::span(config_text))));
  std::vector<Parameter*> parameters = model.parameters();
  if (!model.first_stage())  // a tied embedding's copy on the last stage: the first stage writes it
    std::erase_if(parameters, [](const Parameter* p) {
      return p->name == "wte.weight" || p->name == "model.embed_tokens.weight";
    });
  save_parameter_tensors(tp, model.config(), parameters,
                         {{"", [&](size_t i) { return parameters[i]->value.f32(); }}},
                         (fs::path(dir) / "model.safetensors").string(), {{kConfigCrcKey, config_crc}}, model_parallel);
  ProcessGroup& group = model_parallel ? *model_parallel : tp;
  std::string error;
  if (group.rank() == 0) {
    try {
      write_file_atomically((fs::path(dir) / "config.json").string(), config_text);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  group.agree<IoError>(error);
}

namespace {

// Files of an earlier sharded save that a loader would prefer over model.safetensors.
std::vector<fs::path> sharded_leftovers(const fs::path& dir) {
  std::vector<fs::path> out;
  const fs::path index = dir / "model.safetensors.index.json";
  std::error_code ec;
  if (!fs::exists(index, ec)) return out;
  try {
    std::ifstream in(index);
    const nlohmann::json j = nlohmann::json::parse(in);
    std::set<std::string> shards;
    for (const auto& [name, shard] : j.at("weight_map").items())
      if (shard.is_string()) shards.insert(shard.get<std::string>());
    for (const std::string& shard : shards) {
      const fs::path rel(shard);
      if (!shard.empty() && rel.filename() == rel && shard != "model.safetensors") out.push_back(dir / rel);
    }
  } catch (const std::exception&) {  // a malformed index: removing the index alone is enough
  }
  out.insert(out.begin(), index);  // the index goes first: without it no loader looks at the shards
  return out;
}

}  // namespace

namespace {

// A "<name>.<pid>" leftover of a process on this host that no longer runs (another process may be
// saving into the same directory right now: its files are left alone).
bool leftover_of_dead_process(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0) return false;
  const std::string pid = name.substr(prefix.size());
  if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) return false;
  return ::kill(pid_t(std::stol(pid)), 0) != 0 && errno == ESRCH;
}

}  // namespace

void remove_stale_save_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (leftover_of_dead_process(name, "model.safetensors.tmp.") || leftover_of_dead_process(name, "config.json.tmp.") ||
        leftover_of_dead_process(name, ".tmp.save."))
      fs::remove_all(entry.path(), ec);
  }
}

void save_hf_checkpoint(ProcessGroup& tp, TransformerLM& model, const std::string& dir, ProcessGroup* model_parallel) {
  ProcessGroup& group = model_parallel ? *model_parallel : tp;
  // Everything is written into a private directory inside `dir` first, so a killed save leaves the
  // old files untouched (and the next save removes the leftovers). Then, in an order where no loader
  // sees a silently wrong model: the stale sharded index (which loaders prefer), its shards,
  // config.json, model.safetensors. model.safetensors records the CRC32C of its config.json, so the
  // one window left (new config.json beside the old weights) is reported by load_hf_checkpoint.
  std::string error, tmp;
  if (group.rank() == 0) {
    try {
      fs::create_directories(dir);
      remove_stale_save_files(dir);
      tmp = (fs::path(dir) / fmt::format(".tmp.save.{}", ::getpid())).string();
      fs::create_directories(tmp);
    } catch (const std::exception& e) {
      error = fmt::format("cannot write the model to {}: {}; check that --out names a writable directory", dir,
                          e.what());
    }
  }
  group.agree<IoError>(error);
  group.broadcast_string(tmp, 0);
  try {
    write_hf_files(tp, model, tmp, model_parallel);
  } catch (const Error&) {
    if (group.rank() == 0) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    throw;
  }
  if (group.rank() == 0) {
    try {
      fsync_dir(tmp);
      for (const fs::path& stale : sharded_leftovers(dir)) fs::remove(stale);
      for (const char* name : {"config.json", "model.safetensors"}) fs::rename(fs::path(tmp) / name, fs::path(dir) / name);
      fs::remove(tmp);
      fsync_dir(dir);
    } catch (const std::exception& e) {
      error = fmt::format("cannot write the model to {}: {}", dir, e.what());
    }
  }
  group.agree<IoError>(error);
}

}  // namespace tensorpar::io
