// tensorpar eval: mean next-token cross-entropy and perplexity of a saved model on a token or text
// file or glob of shards, at any TP degree. Row b of the batch is tokens[b*T, b*T+T) and its targets the same tokens
// shifted by one, so B*T+1 tokens are needed.
#include <nlohmann/json.hpp>

#include <cmath>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/token_file.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar::cli {

void add_eval_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("eval", "loss and perplexity of a saved model on a token or text file");
  struct Options {
    std::string model, data;
    int64_t batch = 4, seq = 64;
    bool json = false;
    std::string weights = "f32";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--data", o->data, "llm.c token file (.bin) or plain text file")->required();
  cmd->add_option("--batch", o->batch, "rows (row b = tokens[b*seq : b*seq+seq])")->capture_default_str();
  cmd->add_option("--seq", o->seq, "tokens per row")->capture_default_str();
  cmd->add_flag("--json", o->json, "print {\"loss\": ..., \"perplexity\": ...} as the last line of stdout");
  cmd->add_option("--weights", o->weights, "weights of the block linears (and an untied LM head): f32, or int8/int4 blockwise-quantized at load (Q8_0/Q4_0)")->capture_default_str();
  auto tp_comm_dtype = std::make_shared<std::string>("f32");
  add_tp_comm_dtype_option(cmd, *tp_comm_dtype);
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      const WeightFormat weights = parse_weight_format(o->weights);
      const ModelConfig config = io::read_model_config(o->model);
      const int64_t B = o->batch, T = o->seq;
      TP_CHECK(B >= 1 && T >= 1, ConfigError, "--batch and --seq must be at least 1 (got {} and {})", B, T);
      TP_CHECK(T <= config.max_seq, ConfigError, "--seq {} is longer than the model's {} positions", T, config.max_seq);
      const int64_t N = checked_mul(B, T, "--batch x --seq");
      TransformerLM::check_size(config, world.size(), B, T);  // before the token buffers are allocated
      std::vector<int32_t> x, y;
      std::string error;
      try {  // every rank maps the file(s); a rank-local failure must not leave the others waiting
        const io::TokenDataset data = io::TokenDataset::open(o->data);
        TP_CHECK(data.size() >= N + 1, ConfigError,
                 "{} has {} tokens but --batch {} x --seq {} needs {} (one more for the last target)", o->data,
                 data.size(), B, T, N + 1);
        std::vector<int32_t> row(size_t(N + 1));
        data.read(0, N + 1, row.data(), config.vocab_size);
        x.assign(row.begin(), row.end() - 1);
        y.assign(row.begin() + 1, row.end());
      } catch (const Error& e) {
        error = e.what();
      }
      world.agree<ConfigError>(error);
      // inference only: no gradients; int8/int4 are quantized while loading, each rank its own slices
      TransformerLM model(world, config, B, T, 0,
                          {.tp_comm_dtype = parse_comm_dtype(*tp_comm_dtype), .inference = true, .weights = weights});
      io::load_hf_checkpoint(world, model, o->model);
      const double loss = model.forward(x.data(), y.data(), B, T);
      const double perplexity = std::exp(loss);
      print_rank0(world, o->json ? nlohmann::json{{"loss", loss}, {"perplexity", perplexity}, {"tokens", B * T}}.dump() + "\n"
                                 : fmt::format("loss {:.6f}, perplexity {:.4f} over {} x {} tokens (TP={})\n", loss,
                                               perplexity, B, T, world.size()));
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
