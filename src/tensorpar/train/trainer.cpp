#include "tensorpar/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include <unistd.h>

#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/metrics.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/data_loader.hpp"
#include "tensorpar/train/grad_norm.hpp"
#include "tensorpar/train/options_check.hpp"

namespace tensorpar {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const int s = int(std::lround(std::max(0.0, seconds)));
  return s >= 60 ? fmt::format("{}m{:02d}s", s / 60, s % 60) : fmt::format("{}s", s);
}

// Every rank maps the file(s) (only headers are read); a failure anywhere becomes the same error everywhere.
io::TokenDataset load_data(ProcessGroup& world, const std::string& path) {
  io::TokenDataset data;
  std::string error;
  try {
    data = io::TokenDataset::open(path);
  } catch (const Error& e) {
    error = e.what();
  }
  world.agree<IoError>(error);
  return data;
}

float mean_validation_loss(TransformerLM& model, DataLoader& loader, int64_t batches, int64_t B, int64_t T,
                           std::vector<int32_t>& x, std::vector<int32_t>& y, ProcessGroup& dp) {
  loader.reset();
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    loader.next(x.data(), y.data());
    sum += model.forward(x.data(), y.data(), B, T);
  }
  dp.all_reduce(std::span<double>(&sum, 1));
  return float(sum / double(batches * dp.size()));
}

}  // namespace

TrainResult train(ProcessGroup& world, const TrainOptions& o) {
  TP_CHECK(o.steps >= 1, ConfigError, "--steps must be at least 1 (got {})", o.steps);
  TP_CHECK(o.grad_accum >= 1, ConfigError, "--grad-accum must be at least 1 (got {})", o.grad_accum);
  check_train_options(o);
  const int tp_size = o.tp > 0 ? o.tp : world.size();
  Mesh mesh(world, tp_size);
  ProcessGroup& tp = mesh.tp();
  ProcessGroup& dp = mesh.dp();

  const io::TokenDataset data = load_data(world, o.data);
  ModelConfig config = o.init.empty() ? o.model : io::read_model_config(o.init);
  if (o.init.empty()) {
    // token files: GPT-2's vocabulary unless --vocab says otherwise (finding the largest id would read
    // the whole data set); ids beyond it are refused as batches are read
    if (config.vocab_size <= 0) config.vocab_size = data.byte_level() ? 256 : 50257;
    if (config.max_seq < o.seq) config.max_seq = o.seq;
  }
  config.validate(tp.size());
  TP_CHECK(o.seq <= config.max_seq, ConfigError, "--seq {} exceeds the model's {} positions", o.seq, config.max_seq);
  TransformerLM::check_size(config, tp.size(), o.batch, o.seq, o.compute);  // before any buffer is allocated

  // the tail of the data set is held out for validation when there is enough of it
  const int64_t n = data.size();
  const int64_t val_tokens = int64_t(double(n) * o.val_fraction);
  const bool validate = o.val_fraction > 0 && val_tokens >= 1 &&
                        (val_tokens - 1) / o.batch / o.seq / dp.size() >= 1;  // >= B*T*dp + 1, without overflow
  const int64_t train_end = validate ? n - val_tokens : n;
  DataLoader loader(data, 0, train_end, o.batch, o.seq, dp.rank(), dp.size(), config.vocab_size, o.data);
  std::unique_ptr<DataLoader> val_loader;
  if (validate)
    val_loader = std::make_unique<DataLoader>(data, train_end, n, o.batch, o.seq, dp.rank(), dp.size(),
                                              config.vocab_size, o.data + " (validation split)");

  TransformerLM model(tp, config, o.batch, o.seq, o.seed, o.compute);
  if (!o.init.empty()) io::load_hf_checkpoint(tp, model, o.init);
  AdamW optimizer(model.parameters(), o.adamw);
  LrSchedule schedule = o.schedule;
  schedule.total_steps = o.steps;

  const bool writer = world.rank() == 0;
  // a terminal gets one line rewritten in place; a log gets about twenty lines
  const bool terminal = ::isatty(2) != 0;
  const int64_t log_every = std::max<int64_t>(1, o.steps / 20);
  std::unique_ptr<io::MetricsWriter> metrics;
  {  // only rank 0 opens it; agreed on, so an unwritable path stops every rank before the first step
    std::string error;
    try {
      if (writer && !o.metrics.empty()) metrics = std::make_unique<io::MetricsWriter>(o.metrics);
    } catch (const Error& e) {
      error = e.what();
    }
    world.agree<IoError>(error);
  }

  std::vector<int32_t> x(size_t(o.batch * o.seq)), y(x.size());
  TrainResult result;
  result.parameters = config.parameter_count();
  const double tokens_per_step = double(o.batch * o.seq * o.grad_accum * dp.size());
  double timed_seconds = 0;
  const auto start = Clock::now();
  if (writer && o.progress)
    std::fprintf(stderr, "training %.2fM parameters: TP=%d x DP=%d, %ld layers, hidden %ld, heads %ld, seq %ld, "
                 "batch %ld, %ld steps\n",
                 double(result.parameters) / 1e6, tp.size(), dp.size(), long(config.layers), long(config.hidden),
                 long(config.heads), long(o.seq), long(o.batch), long(o.steps));

  for (int64_t step = 0; step < o.steps; ++step) {
    const auto t0 = Clock::now();
    model.zero_grad();
    double loss = 0;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      loader.next(x.data(), y.data());
      loss += model.forward(x.data(), y.data(), o.batch, o.seq) / double(o.grad_accum);
      model.backward(x.data(), y.data(), o.batch, o.seq, 1.0f / float(o.grad_accum));
    }
    if (dp.size() > 1) {  // average gradients and the loss over data-parallel replicas
      for (Parameter* p : model.parameters()) {
        dp.all_reduce(p->grad.span());
        for (float& g : p->grad.span()) g /= float(dp.size());
      }
      dp.all_reduce(std::span<double>(&loss, 1));
      loss /= dp.size();
    }
    const double norm = clip_grad_norm(tp, model.parameters(), o.grad_clip);
    const float lr = schedule.at(step);
    optimizer.step(lr);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (step > 0 || o.steps == 1) timed_seconds += dt;
    const int64_t timed_steps = o.steps == 1 ? 1 : step;
    const double tokens_per_s = timed_steps > 0 && timed_seconds > 0 ? tokens_per_step * double(timed_steps) / timed_seconds
                                                                     : tokens_per_step / dt;
    result.history.push_back({float(loss), norm, lr});
    result.loss = float(loss);
    result.grad_norm = norm;
    result.tokens_per_s = tokens_per_s;
    result.steps = step + 1;
    if (metrics)
      metrics->write({{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens_per_s", tokens_per_s}});

    const bool last = step + 1 == o.steps;
    if (val_loader && ((o.val_every > 0 && (step + 1) % o.val_every == 0) || last)) {
      result.val_loss = mean_validation_loss(model, *val_loader, o.val_batches, o.batch, o.seq, x, y, dp);
      if (metrics) metrics->write({{"step", step + 1}, {"val_loss", result.val_loss}});
    }
    if (writer && o.progress && (terminal || last || (step + 1) % log_every == 0)) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      const double eta = elapsed / double(step + 1) * double(o.steps - step - 1);
      std::string line = fmt::format("step {:>{}}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s | ETA {}",
                                     step + 1, std::to_string(o.steps).size(), o.steps, loss, lr, norm, tokens_per_s,
                                     format_duration(eta));
      if (result.val_loss >= 0) line += fmt::format(" | val {:.4f}", result.val_loss);
      if (terminal)
        std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), last ? "\n" : "");
      else
        std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
    }
  }

  if (!o.out.empty() && dp.rank() == 0) io::save_hf_checkpoint(tp, model, o.out);
  world.barrier();
  return result;
}

}  // namespace tensorpar
