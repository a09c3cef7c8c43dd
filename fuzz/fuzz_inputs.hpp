// What each libFuzzer target does with one input, shared with the regression test
// (tests/io/test_fuzz_regressions.cpp) that replays every crash found as a normal test. Each function
// returns when the input is read (and, where it makes sense, used in full), throws tensorpar::Error
// when the input is refused, and must never do anything else: another exception type, a crash or a
// sanitizer report is a bug.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/model_config_file.hpp"
#include "tensorpar/io/safetensors.hpp"
#include "tensorpar/io/sharded_safetensors.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/io/tokenizer.hpp"

namespace tensorpar::fuzz {

// A safetensors file (8-byte header length, JSON header, data). Everything SafetensorsFile::open
// accepts must be readable in full: every tensor's bytes and, for float dtypes, every element
// converted through read_block and read_block_transposed.
inline void safetensors_input(std::string_view input) {
  const io::SafetensorsFile file = io::SafetensorsFile::open(write_file("model.safetensors", input));
  for (const std::string& name : file.names()) {
    const io::StTensorInfo& t = file.info(name);
    const std::byte* p = file.data(name);
    volatile unsigned sum = 0;  // touch every byte: ASan sees a read past the mapping
    for (uint64_t i = t.begin; i < t.end; ++i) sum = sum + unsigned(p[i - t.begin]);
    if (t.dtype != io::StDType::F32 && t.dtype != io::StDType::F16 && t.dtype != io::StDType::BF16) continue;
    // the [rows, cols] view read_block documents; the header check bounds rows * cols
    int64_t rows = 1, cols = 1;
    if (t.shape.size() == 1) cols = t.shape[0];
    if (t.shape.size() > 1) rows = t.shape[0];
    for (size_t d = 1; d < t.shape.size(); ++d) cols *= t.shape[d];
    if (rows * cols > (int64_t(1) << 20)) continue;  // bytes already touched; no need to convert huge ones
    std::vector<float> block(size_t(std::max<int64_t>(rows * cols, 1)));
    file.read_block(name, 0, rows, 0, cols, block.data(), cols);
    file.read_block_transposed(name, 0, rows, 0, cols, block.data(), rows);
  }
}

// A model directory's config.json, through io::read_model_config and then what the CLI does with a
// configuration before building a model: validate at a few TP degrees, count parameters, write it back.
inline void model_config_input(std::string_view input) {
  write_file("config.json", input);
  const ModelConfig config = io::read_model_config(temp_dir());
  for (int tp : {1, 2, 3, 4}) {
    try {
      config.validate(tp);
    } catch (const Error&) {
      continue;
    }
    volatile int64_t n = config.parameter_count();
    (void)n;
    (void)config.to_hf_json().dump();
  }
}

// model.safetensors.index.json of a sharded checkpoint beside two valid shards
// ("model-00001-of-00002.safetensors" holding "a", "model-00002-of-00002.safetensors" holding "b"),
// opened with io::CheckpointFiles::open_dir; every tensor it then lists must be found.
inline void sharded_index_input(std::string_view input) {
  static const bool shards = [] {
    const float values[4] = {1, 2, 3, 4};
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(values), sizeof values);
    io::write_safetensors(temp_dir() + "/model-00001-of-00002.safetensors", {{"a", io::StDType::F32, {2, 2}, bytes}});
    io::write_safetensors(temp_dir() + "/model-00002-of-00002.safetensors", {{"b", io::StDType::F32, {4}, bytes}});
    return true;
  }();
  (void)shards;
  write_file("model.safetensors.index.json", input);
  const io::CheckpointFiles files = io::CheckpointFiles::open_dir(temp_dir());
  for (const std::string& name : files.names()) (void)files.file_for(name).info(name);
}

// A training-data file (llm.c token file or plain text) through io::TokenDataset, read whole. An
// accepted file's tokens must be non-negative (and bytes for plain text): no embedding could look up
// anything else.
inline void token_file_input(std::string_view input) {
  const io::TokenDataset d = io::TokenDataset::open(write_file("tokens.bin", input));
  std::vector<int32_t> tokens(size_t(d.size()));
  d.read(0, d.size(), tokens.data(), io::kMaxTokenVocab);
  for (const int32_t t : tokens)
    if (t < 0 || (d.byte_level() && t > 255)) std::abort();
}

// Tokenizer files, then encode/decode with them. The input is split at the first two 0xFF bytes
// (never in UTF-8 text) into up to three parts; byte 0 chooses the format:
//   even: vocab.json = part 1, merges.txt = part 2 (Gpt2BpeTokenizer::from_files)
//   odd:  tokenizer.json = part 1                  (Gpt2BpeTokenizer::from_tokenizer_json)
// and the last part (when there are two or more) is text to encode. What encode returns must decode;
// decoding each id of the vocabulary must not crash, and one id past it must be refused.
inline void tokenizer_input(std::string_view input) {
  if (input.empty()) return;
  const bool tokenizer_json = input[0] & 1;
  std::string_view rest = input.substr(1);
  std::vector<std::string_view> parts;
  for (int i = 0; i < 2; ++i) {
    const size_t cut = rest.find('\xff');
    if (cut == std::string_view::npos) break;
    parts.push_back(rest.substr(0, cut));
    rest.remove_prefix(cut + 1);
  }
  parts.push_back(rest);
  const std::string_view text = parts.size() > 1 ? parts.back() : std::string_view("Hello world <|endoftext|> 123");
  std::optional<io::Gpt2BpeTokenizer> tok;
  if (tokenizer_json) {
    tok.emplace(io::Gpt2BpeTokenizer::from_tokenizer_json(write_file("tokenizer.json", parts[0])));
  } else {
    const std::string vocab = write_file("vocab.json", parts[0]);
    const std::string merges = write_file("merges.txt", parts.size() > 2 ? parts[1] : std::string_view());
    tok.emplace(io::Gpt2BpeTokenizer::from_files(vocab, merges));
  }
  const std::vector<int32_t> ids = tok->encode(text);
  (void)tok->decode(ids);
  const int64_t n = std::min<int64_t>(tok->vocab_size(), 4096);
  for (int32_t id = 0; id < n; ++id) {
    const int32_t one[1] = {id};
    try {
      (void)tok->decode(one);
    } catch (const Error&) {  // a hole in the vocabulary
    }
  }
  if (tok->vocab_size() < INT32_MAX) {
    const int32_t past[1] = {int32_t(tok->vocab_size())};
    bool refused = false;
    try {
      (void)tok->decode(past);
    } catch (const Error&) {
      refused = true;
    }
    if (!refused) std::abort();  // an id past the vocabulary was decoded
  }
}

}  // namespace tensorpar::fuzz
