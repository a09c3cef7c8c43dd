// tensorpar report: turn a metrics JSON-lines file into an SVG loss curve.
#include "tensorpar/cli/command.hpp"
#include "tensorpar/io/loss_report.hpp"

namespace tensorpar::cli {

void add_report_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("report", "draw the loss curve of a metrics file as SVG");
  auto metrics = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>("loss.svg");
  cmd->add_option("metrics", *metrics, "metrics JSON-lines file written by train --metrics")->required();
  cmd->add_option("-o,--output", *out, "SVG file to write")->capture_default_str();
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      std::string error;
      if (world.rank() == 0) {
        try {
          io::write_loss_report(*metrics, *out);
        } catch (const Error& e) {
          error = e.what();
        }
      }
      world.agree<IoError>(error);
      print_rank0(world, fmt::format("wrote {}\n", *out));
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
