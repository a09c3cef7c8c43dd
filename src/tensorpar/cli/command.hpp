// How a subcommand plugs into the CLI: it adds itself to the parser and leaves behind the function
// to run once every rank has parsed the same arguments.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

#include "tensorpar/comm/process_group.hpp"

namespace tensorpar::cli {

// Runs a parsed subcommand on every rank; returns the process exit code.
using Runner = std::function<int(ProcessGroup& world)>;

void add_train_command(CLI::App& app, Runner& run);
void add_sample_command(CLI::App& app, Runner& run);
void add_report_command(CLI::App& app, Runner& run);
void add_bench_command(CLI::App& app, Runner& run);
void add_eval_command(CLI::App& app, Runner& run);
void add_generate_command(CLI::App& app, Runner& run);
void add_tokenize_command(CLI::App& app, Runner& run);
void add_serve_command(CLI::App& app, Runner& run);
void add_plan_command(CLI::App& app, Runner& run);

// --tp-comm-dtype f32|bf16|int8 (wire format of the TP activation collectives) into `dtype`.
void add_tp_comm_dtype_option(CLI::App* cmd, std::string& dtype);

// Prints on rank 0 only (stdout); the other ranks say nothing.
void print_rank0(const ProcessGroup& world, const std::string& text);

}  // namespace tensorpar::cli
