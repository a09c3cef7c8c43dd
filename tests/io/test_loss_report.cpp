// Loss report SVG: well-formed XML (checked by a small tag-balancing parser), one polyline per series
// with one point per record, points placed where the values say, title escaped, errors on no data.
#include "tensorpar/io/loss_report.hpp"

#include <gtest/gtest.h>

#include <sstream>

#include "io/temp_dir.hpp"
#include "tensorpar/core/error.hpp"
#include "tensorpar/io/metrics.hpp"

namespace tensorpar::io {
namespace {

using tensorpar::testing::read_file_bytes;
using tensorpar::testing::TempDir;

// Checks tags nest and close, attributes are quoted, and text has no raw '<' or stray '&'.
::testing::AssertionResult well_formed(const std::string& xml) {
  std::vector<std::string> stack;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      const size_t semi = xml.find(';', i);
      const std::string ent = xml.substr(i, semi == std::string::npos ? 1 : semi - i + 1);
      if (ent != "&lt;" && ent != "&gt;" && ent != "&amp;" && ent != "&quot;")
        return ::testing::AssertionFailure() << "bad entity at " << i << ": " << ent;
      i += ent.size();
      continue;
    }
    if (xml[i] != '<') { ++i; continue; }
    const size_t end = xml.find('>', i);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unterminated tag at " << i;
    std::string tag = xml.substr(i + 1, end - i - 1);
    if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) return ::testing::AssertionFailure() << "odd quotes in <" << tag << ">";
    if (tag.find('<') != std::string::npos) return ::testing::AssertionFailure() << "'<' inside <" << tag << ">";
    if (tag.starts_with("/")) {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return ::testing::AssertionFailure() << "</" << name << "> closes " << (stack.empty() ? "nothing" : stack.back());
      stack.pop_back();
    } else if (!tag.ends_with("/")) {
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
    i = end + 1;
  }
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> never closed";
  return ::testing::AssertionSuccess();
}

// The points="x,y ..." of the polyline with class `cls`, or empty.
std::vector<std::pair<double, double>> polyline_points(const std::string& svg, const std::string& cls) {
  const size_t at = svg.find("<polyline class=\"" + cls + "\"");
  if (at == std::string::npos) return {};
  const size_t p = svg.find("points=\"", at) + 8, q = svg.find('"', p);
  std::istringstream in(svg.substr(p, q - p));
  std::vector<std::pair<double, double>> pts;
  std::string xy;
  while (in >> xy) pts.push_back({std::stod(xy.substr(0, xy.find(','))), std::stod(xy.substr(xy.find(',') + 1))});
  return pts;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(LossReport, TrainAndValidationSeries) {
  std::vector<nlohmann::json> records;
  for (int step = 0; step < 50; ++step) records.push_back({{"step", step}, {"loss", 5.0 - 0.06 * step}, {"lr", 1e-3}});
  for (int step = 0; step < 50; step += 10) records.push_back({{"step", step}, {"val_loss", 5.2 - 0.05 * step}});
  records.push_back({{"event", "checkpoint"}});
  const std::string svg = loss_curve_svg(records, "GPT-2 <124M> & TP=2");

  EXPECT_TRUE(svg.starts_with("<svg"));
  const std::string trimmed = svg.substr(0, svg.find_last_not_of(" \n") + 1);
  EXPECT_TRUE(trimmed.ends_with("</svg>"));
  EXPECT_TRUE(well_formed(svg));
  EXPECT_NE(svg.find("GPT-2 &lt;124M&gt; &amp; TP=2"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 5u);
  EXPECT_NE(svg.find("train loss"), std::string::npos);
  EXPECT_NE(svg.find("validation loss"), std::string::npos);

  const auto train = polyline_points(svg, "train"), val = polyline_points(svg, "val");
  ASSERT_EQ(train.size(), 50u);
  ASSERT_EQ(val.size(), 5u);
  for (size_t i = 1; i < train.size(); ++i) {
    EXPECT_GT(train[i].first, train[i - 1].first) << i;   // step increases to the right
    EXPECT_GT(train[i].second, train[i - 1].second) << i; // falling loss goes down the page (larger y)
  }
  // Linear scaling: equal step/loss increments give equal pixel increments.
  EXPECT_NEAR(train[2].first - train[1].first, train[40].first - train[39].first, 0.02);
  EXPECT_NEAR(train[2].second - train[1].second, train[40].second - train[39].second, 0.02);
  // Validation at step 0 (5.2) sits above train at step 0 (5.0), at the same x.
  EXPECT_NEAR(val[0].first, train[0].first, 0.01);
  EXPECT_LT(val[0].second, train[0].second);
  for (const auto& [x, y] : train) {
    EXPECT_GE(x, 0); EXPECT_LE(x, 800); EXPECT_GE(y, 0); EXPECT_LE(y, 500);
  }
}

TEST(LossReport, TrainOnlySinglePointAndNulls) {
  const std::string svg = loss_curve_svg({{{"step", 7}, {"loss", 3.0}}, {{"step", 8}, {"loss", nullptr}}}, "one");
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "<polyline"), 1u);
  EXPECT_EQ(polyline_points(svg, "train").size(), 1u);
  EXPECT_EQ(svg.find("validation loss"), std::string::npos);
  EXPECT_THROW(loss_curve_svg({}, "empty"), ConfigError);
  EXPECT_THROW(loss_curve_svg({{{"step", 1}, {"lr", 0.1}}}, "no loss"), ConfigError);
}

TEST(LossReport, WriteFromMetricsFile) {
  TempDir dir;
  {
    MetricsWriter w(dir.file("metrics.jsonl"));
    for (int step = 1; step <= 20; ++step) w.write({{"step", step}, {"loss", 10.0 / step}});
    w.write({{"step", 20}, {"val_loss", 0.7}});
  }
  write_loss_report(dir.file("metrics.jsonl"), dir.file("loss.svg"));
  const std::string svg = read_file_bytes(dir.file("loss.svg"));
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(polyline_points(svg, "train").size(), 20u);
  EXPECT_EQ(polyline_points(svg, "val").size(), 1u);
  EXPECT_NE(svg.find("metrics.jsonl"), std::string::npos);

  dir.write("empty.jsonl", "");
  dir.write("noloss.jsonl", "{\"step\": 1, \"lr\": 0.1}\n");
  for (const char* name : {"empty.jsonl", "noloss.jsonl"}) {
    try {
      write_loss_report(dir.file(name), dir.file("x.svg"));
      ADD_FAILURE() << name << ": no error";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.svg")));
}

}  // namespace
}  // namespace tensorpar::io
