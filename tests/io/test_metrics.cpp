// Metrics JSON lines: write/read round trip, append mode, malformed lines reported with their number.
#include "tensorpar/io/metrics.hpp"

#include <gtest/gtest.h>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::read_file_bytes;
using tensorpar::testing::TempDir;

TEST(Metrics, WriteReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    w.write({{"step", 1}, {"loss", 4.5}, {"note", "two\nlines"}});
    // Flushed per line: readable while the writer is still open.
    EXPECT_EQ(read_metrics(path).size(), 1u);
    w.write({{"step", 2}, {"val_loss", 4.25}});
  }
  const std::string text = read_file_bytes(path);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  const auto r = read_metrics(path);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["step"], 1);
  EXPECT_EQ(r[0]["loss"], 4.5);
  EXPECT_EQ(r[0]["note"], "two\nlines");
  EXPECT_EQ(r[1]["val_loss"], 4.25);

  { MetricsWriter(path, /*append=*/true).write({{"step", 3}, {"loss", 4.0}}); }
  EXPECT_EQ(read_metrics(path).size(), 3u);
  { MetricsWriter(path).write({{"step", 0}}); }
  EXPECT_EQ(read_metrics(path).size(), 1u);
}

TEST(Metrics, MalformedLinesNameFileAndLine) {
  TempDir dir;
  auto message = [](const std::string& path) -> std::string {
    try {
      read_metrics(path);
    } catch (const IoError& e) {
      return e.what();
    }
    return "(no IoError)";
  };
  const std::string bad = dir.write("bad.jsonl", "{\"step\": 1}\n\n{\"step\": 2, \"loss\": \n{\"step\": 3}\n");
  EXPECT_NE(message(bad).find("bad.jsonl: line 3"), std::string::npos) << message(bad);
  const std::string arr = dir.write("arr.jsonl", "{\"step\": 1}\n[1, 2]\n");
  EXPECT_NE(message(arr).find("arr.jsonl: line 2"), std::string::npos) << message(arr);
  EXPECT_NE(message(dir.file("none.jsonl")).find("none.jsonl"), std::string::npos);
  EXPECT_THROW(MetricsWriter(dir.file("no/such/dir/m.jsonl")), IoError);
  EXPECT_TRUE(read_metrics(dir.write("empty.jsonl", "")).empty());
}

}  // namespace
}  // namespace tensorpar::io
