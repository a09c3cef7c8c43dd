// tensorpar tokenize: text files -> llm.c token files, so a user can go from text to a training run
// without Python. Each input file is one document. GPT-2 puts <|endoftext|> before every document, as
// llm.c's data scripts do; Llama-style tokenizers start every document with their BOS (from encode).
// Work is split into chunks cut at split points (io/tokenizer.hpp), encoded by --threads threads and
// joined in order, so the output equals the serial encoding exactly. Runs on rank 0 only.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/kernels/gemm.hpp"

namespace tensorpar::cli {

namespace {

namespace fs = std::filesystem;

struct Chunk {
  size_t file;
  std::string_view text;
  bool document_start;
};

// Chunks of about chunk_bytes, cut only where the tokenizer allows (whole documents otherwise).
std::vector<Chunk> make_chunks(const std::vector<io::MappedFile>& files, const io::Tokenizer& tok, size_t chunk_bytes) {
  std::vector<Chunk> chunks;
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string_view text(reinterpret_cast<const char*>(files[f].data()), size_t(files[f].size()));
    size_t begin = 0;
    do {
      size_t end = text.size();
      if (tok.splits_at_newlines() && text.size() - begin > chunk_bytes)
        end = std::min(text.size(), io::next_split_point(text, begin + chunk_bytes));
      chunks.push_back({f, text.substr(begin, end - begin), begin == 0});
      begin = end;
    } while (begin < text.size());
  }
  return chunks;
}

// "dir/tokens.bin" -> "dir/tokens_000003.bin", as llm.c names its shards.
std::string shard_path(const std::string& out, size_t index) {
  const fs::path p(out);
  return (p.parent_path() / fmt::format("{}_{:06d}{}", p.stem().string(), index, p.extension().string())).string();
}

void check_writable(const std::string& out) {
  const fs::path parent = fs::absolute(out).parent_path();
  std::error_code ec;
  TP_CHECK(fs::is_directory(parent, ec) && ::access(parent.c_str(), W_OK) == 0, IoError,
           "--out {}: directory {} does not exist or is not writable; create it or choose another path", out,
           parent.string());
}

int tokenize(const std::string& tokenizer_dir, const std::vector<std::string>& inputs, const std::string& out,
             int64_t shard_size, int64_t chunk_bytes, bool quiet) {
  TP_CHECK(shard_size >= 0, ConfigError, "--shard-size must be >= 0 (0: one file), got {}", shard_size);
  TP_CHECK(chunk_bytes >= 1, ConfigError, "--chunk-size must be at least 1 byte, got {}", chunk_bytes);
  std::error_code ec;
  TP_CHECK(fs::is_directory(tokenizer_dir, ec), IoError,
           "--tokenizer {}: not a directory; give the model or tokenizer directory holding tokenizer.json or "
           "vocab.json + merges.txt",
           tokenizer_dir);
  const std::unique_ptr<io::Tokenizer> tok = io::read_tokenizer(tokenizer_dir);
  TP_CHECK(tok != nullptr, IoError,
           "--tokenizer {}: has neither tokenizer.json nor vocab.json + merges.txt; copy the tokenizer files of the "
           "model there",
           tokenizer_dir);
  check_writable(out);
  std::vector<io::MappedFile> files;
  size_t total_bytes = 0;
  for (const auto& path : inputs) {
    files.push_back(io::MappedFile::open(path));
    total_bytes += size_t(files.back().size());
  }
  const std::vector<Chunk> chunks = make_chunks(files, *tok, size_t(chunk_bytes));

  // Workers take chunks in order from a shared counter; the main thread reports progress.
  std::vector<std::vector<int32_t>> encoded(chunks.size());
  std::atomic<size_t> next{0}, bytes_done{0}, tokens_done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t i; !failed && (i = next++) < chunks.size();) {
      try {
        const Chunk& c = chunks[i];
        encoded[i] = c.document_start ? tok->encode(c.text) : tok->encode_continuation(c.text);
        bytes_done += c.text.size();
        tokens_done += encoded[i].size();
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
  };
  const int threads = std::max(1, std::min<int>(num_threads(), int(chunks.size())));
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto progress = [&](const char* end) {
    if (quiet) return;
    const double s = std::max(seconds(), 1e-9);
    std::fprintf(stderr, "\rtokenize: %.1f / %.1f MB, %zu tokens, %.2f MB/s, %.0f tokens/s%s", bytes_done / 1e6,
                 total_bytes / 1e6, tokens_done.load(), bytes_done / 1e6 / s, tokens_done / s, end);
    std::fflush(stderr);
  };
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    auto last = std::chrono::steady_clock::now();
    while (!failed && bytes_done < total_bytes) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (std::chrono::steady_clock::now() - last > std::chrono::milliseconds(500)) {
        progress("");
        last = std::chrono::steady_clock::now();
      }
    }
  }  // joins the workers
  if (error) std::rethrow_exception(error);
  const double elapsed = seconds();
  progress("\n");

  const std::optional<int32_t> separator = tok->document_separator();
  std::vector<int32_t> tokens;
  tokens.reserve(tokens_done + (separator ? files.size() : 0));
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (chunks[i].document_start && separator) tokens.push_back(*separator);
    tokens.insert(tokens.end(), encoded[i].begin(), encoded[i].end());
    std::vector<int32_t>().swap(encoded[i]);
  }
  const int version = tok->vocab_size() <= 65536 ? 1 : 2;
  size_t shards = 0;
  if (shard_size == 0) {
    io::write_llmc_tokens(out, tokens, version);
    shards = 1;
  } else {
    for (size_t begin = 0; begin < tokens.size(); begin += size_t(shard_size), ++shards) {
      const size_t n = std::min(tokens.size() - begin, size_t(shard_size));
      io::write_llmc_tokens(shard_path(out, shards), std::span(tokens).subspan(begin, n), version);
    }
    TP_CHECK(shards > 0, ConfigError, "{}: the inputs encode to no tokens; nothing to write", out);
  }
  std::printf("tokenize: %zu tokens from %zu files (%.1f MB) to %s%s, %s, in %.2f s with %d threads: %.2f MB/s, %.0f tokens/s\n",
              tokens.size(), files.size(), total_bytes / 1e6, out.c_str(),
              shard_size ? fmt::format(" as {} shards", shards).c_str() : "", version == 1 ? "uint16" : "uint32",
              elapsed, threads, total_bytes / 1e6 / std::max(elapsed, 1e-9), tokens_done / std::max(elapsed, 1e-9));
  std::fflush(stdout);
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("tokenize", "encode text files into llm.c token files for training");
  struct Options {
    std::string tokenizer, out;
    std::vector<std::string> inputs;
    int64_t shard_size = 0, chunk_size = 1 << 20;
    bool quiet = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--tokenizer", o->tokenizer, "directory with tokenizer.json or vocab.json + merges.txt")->required();
  cmd->add_option("--input", o->inputs, "text files; each is one document")->required()->expected(1, -1);
  cmd->add_option("--out", o->out, "llm.c token file to write (uint16 if the vocabulary fits, else uint32)")->required();
  cmd->add_option("--shard-size", o->shard_size, "tokens per file: OUT_000000.bin, OUT_000001.bin... (0: one file)")
      ->capture_default_str();
  cmd->add_option("--chunk-size", o->chunk_size, "bytes of text per unit of work for the threads")->capture_default_str();
  cmd->add_flag("--quiet", o->quiet, "no progress line on stderr");
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      if (world.rank() != 0) return 0;  // one writer; other ranks have nothing to do
      return tokenize(o->tokenizer, o->inputs, o->out, o->shard_size, o->chunk_size, o->quiet);
    };
  });
}

}  // namespace tensorpar::cli
