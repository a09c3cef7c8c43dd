// An SVG loss curve a person can open in a browser: training loss vs step as a line and, when records
// have "val_loss", validation loss vs step as markers joined by a line; axes with ticks and labels, a
// title and a legend. Records: {"step": .., "loss": ..} and/or {"step": .., "val_loss": ..}; other
// records and non-finite values (written as null) are skipped.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace tensorpar::io {

// ConfigError if no record has a numeric step with a numeric loss or val_loss.
std::string loss_curve_svg(const std::vector<nlohmann::json>& records, const std::string& title);
// Reads a metrics file (metrics.hpp) and writes the SVG via tmp + rename; IoError if there are no loss records.
void write_loss_report(const std::string& metrics_path, const std::string& svg_path);

}  // namespace tensorpar::io
