// Replays inputs through the libFuzzer targets' code (fuzz/fuzz_inputs.hpp) as ordinary tests, so
// the sanitizer-free suite keeps every crash the fuzzers found fixed:
//  - tests/data/fuzz/<target>/*: inputs that once crashed or threw something other than
//    tensorpar::Error; each must now be refused with a tensorpar::Error.
//  - fuzz/corpus/<target>/*: the seed corpora, valid files; each must be accepted (a parser that
//    refuses everything would pass the first check).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "../../fuzz/fuzz_inputs.hpp"

namespace {

namespace fs = std::filesystem;
using Target = std::function<void(std::string_view)>;

const std::vector<std::pair<std::string, Target>>& targets() {
  static const std::vector<std::pair<std::string, Target>> t = {
      {"fuzz_safetensors", tensorpar::fuzz::safetensors_input},
      {"fuzz_model_config", tensorpar::fuzz::model_config_input},
      {"fuzz_sharded_index", tensorpar::fuzz::sharded_index_input},
      {"fuzz_token_file", tensorpar::fuzz::token_file_input},
      {"fuzz_tokenizer", tensorpar::fuzz::tokenizer_input}};
  return t;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FuzzRegressions, EveryCrashFoundIsNowACleanError) {
  for (const auto& [name, run] : targets()) {
    for (const fs::path& p : files_in(fs::path(TENSORPAR_SOURCE_DIR) / "tests/data/fuzz" / name)) {
      const std::string input = read_bytes(p);
      try {
        run(input);
        ADD_FAILURE() << p << " was accepted; it must be refused with a tensorpar::Error";
      } catch (const tensorpar::Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << p << ": message is not one line";
      }
    }
  }
}

TEST(FuzzRegressions, SeedCorporaAreAccepted) {
  size_t seeds = 0;
  for (const auto& [name, run] : targets()) {
    const auto files = files_in(fs::path(TENSORPAR_SOURCE_DIR) / "fuzz/corpus" / name);
    EXPECT_FALSE(files.empty()) << "no seed corpus for " << name;
    for (const fs::path& p : files) {
      EXPECT_NO_THROW(run(read_bytes(p))) << p;
      ++seeds;
    }
  }
  EXPECT_GE(seeds, 5u);
}

}  // namespace
