// SVG loss curve: scales the points into a fixed plot area with "nice" (1/2/5 x 10^k) ticks.
#include "tensorpar/io/loss_report.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "tensorpar/core/error.hpp"
#include "tensorpar/io/atomic_file.hpp"
#include "tensorpar/io/metrics.hpp"

namespace tensorpar::io {

namespace {

struct Point {
  double x, y;
};

// Plot geometry in SVG user units.
constexpr double kWidth = 800, kHeight = 500, kLeft = 80, kRight = 30, kTop = 50, kBottom = 60;

std::vector<Point> series(const std::vector<nlohmann::json>& records, const char* key) {
  std::vector<Point> pts;
  for (const auto& r : records) {
    if (!r.is_object()) continue;
    const auto s = r.find("step"), v = r.find(key);
    if (s == r.end() || v == r.end() || !s->is_number() || !v->is_number()) continue;
    const double x = s->get<double>(), y = v->get<double>();
    if (std::isfinite(x) && std::isfinite(y)) pts.push_back({x, y});
  }
  // Resumed runs can append steps out of order; a curve is drawn left to right.
  std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  return pts;
}

// Axis with about `target` ticks at multiples of a nice step, widened to whole steps.
struct Axis {
  double lo, hi, step;
};
Axis nice_axis(double lo, double hi, int target = 6) {
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {  // one value: give it some room
    const double pad = lo == 0 ? 1 : 0.1 * std::fabs(lo);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target, mag = std::pow(10, std::floor(std::log10(raw))), f = raw / mag;
  const double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, step};
}

std::string escape_xml(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string tick_label(double v, double step) {
  if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0" or 1e-17 from accumulated rounding
  return fmt::format("{:.6g}", v);
}

}  // namespace

std::string loss_curve_svg(const std::vector<nlohmann::json>& records, const std::string& title) {
  const std::vector<Point> train = series(records, "loss"), val = series(records, "val_loss");
  TP_CHECK(!train.empty() || !val.empty(), ConfigError,
           "loss curve '{}': no records with a numeric 'step' and 'loss' or 'val_loss' among {} records", title,
           records.size());
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto* s : {&train, &val})
    for (const Point& p : *s) {
      x0 = std::min(x0, p.x); x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y); y1 = std::max(y1, p.y);
    }
  const Axis ax = nice_axis(x0, x1), ay = nice_axis(y0, y1);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto sx = [&](double x) { return kLeft + (x - ax.lo) / (ax.hi - ax.lo) * pw; };
  auto sy = [&](double y) { return kTop + (ay.hi - y) / (ay.hi - ay.lo) * ph; };  // SVG y grows downwards

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text class=\"title\" x=\"{2}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">{3}</text>\n",
      kWidth, kHeight, kWidth / 2, escape_xml(title));

  // Grid, ticks and tick labels.
  svg += "<g class=\"axes\" stroke=\"#ccc\" stroke-width=\"1\">\n";
  for (int k = 0; ax.lo + k * ax.step <= ax.hi + ax.step * 1e-9; ++k) {
    const double v = ax.lo + k * ax.step, x = sx(v);
    svg += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1}\" x2=\"{0:.2f}\" y2=\"{2}\"/>\n", x, kTop, kTop + ph);
    svg += fmt::format("<text x=\"{:.2f}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" fill=\"black\">{}</text>\n", x,
                       kTop + ph + 18, tick_label(v, ax.step));
  }
  for (int k = 0; ay.lo + k * ay.step <= ay.hi + ay.step * 1e-9; ++k) {
    const double v = ay.lo + k * ay.step, y = sy(v);
    svg += fmt::format("<line x1=\"{1}\" y1=\"{0:.2f}\" x2=\"{2}\" y2=\"{0:.2f}\"/>\n", y, kLeft, kLeft + pw);
    svg += fmt::format("<text x=\"{}\" y=\"{:.2f}\" text-anchor=\"end\" stroke=\"none\" fill=\"black\">{}</text>\n",
                       kLeft - 6, y + 4, tick_label(v, ay.step));
  }
  svg += "</g>\n";
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", kLeft, kTop,
                     pw, ph);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", kLeft + pw / 2, kHeight - 15);
  svg += fmt::format("<text x=\"20\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {0})\">loss</text>\n",
                     kTop + ph / 2);

  auto points = [&](const std::vector<Point>& pts) {
    std::string s;
    for (const Point& p : pts) s += fmt::format("{}{:.2f},{:.2f}", s.empty() ? "" : " ", sx(p.x), sy(p.y));
    return s;
  };
  struct Series {
    const std::vector<Point>* pts;
    const char *cls, *color, *label;
  };
  int legend_row = 0;
  for (const Series& s : {Series{&train, "train", "#1f77b4", "train loss"}, Series{&val, "val", "#d62728", "validation loss"}}) {
    if (s.pts->empty()) continue;
    svg += fmt::format("<polyline class=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", s.cls,
                       s.color, points(*s.pts));
    if (s.pts == &val)
      for (const Point& p : val)
        svg += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", sx(p.x), sy(p.y), s.color);
    const double ly = kTop + 15 + 18 * legend_row++, lx = kLeft + pw - 150;
    svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"/>\n", lx, ly - 4,
                       lx + 25, ly - 4, s.color);
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", lx + 32, ly, s.label);
  }
  svg += "</svg>\n";
  return svg;
}

void write_loss_report(const std::string& metrics_path, const std::string& svg_path) {
  const auto records = read_metrics(metrics_path);
  const bool has_loss = std::any_of(records.begin(), records.end(), [](const nlohmann::json& r) {
    return r.contains("step") && r["step"].is_number() &&
           ((r.contains("loss") && r["loss"].is_number()) || (r.contains("val_loss") && r["val_loss"].is_number()));
  });
  TP_CHECK(has_loss, IoError,
           "{}: no records with 'step' and 'loss' or 'val_loss' ({} records); nothing to plot - was training run with "
           "metrics enabled?",
           metrics_path, records.size());
  const std::string title = "Loss: " + std::filesystem::path(metrics_path).filename().string();
  write_file_atomically(svg_path, loss_curve_svg(records, title));
}

}  // namespace tensorpar::io
