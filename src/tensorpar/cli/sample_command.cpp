// tensorpar sample: load a saved model at any TP degree and print several text continuations of a
// prompt, generated together as one batch through the KV-cache generator (one row per sample).
#include "tensorpar/cli/command.hpp"
#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/infer/generator.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar::cli {

void add_sample_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("sample", "print text continuations of a prompt from a saved model");
  struct Options {
    std::string model, prompt = "\n";
    int64_t max_new_tokens = 200, samples = 1;
    SamplingOptions sampling{0.8f, 40, 1.0f, 1};
    std::string weights = "f32";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--prompt", o->prompt, "text to continue")->capture_default_str();
  cmd->add_option("--max-new-tokens,-n", o->max_new_tokens,
                  "tokens to generate per sample (at most the model's positions minus the prompt)")
      ->capture_default_str();
  cmd->add_option("--samples", o->samples, "how many continuations")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "softmax temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "sampling seed")->capture_default_str();
  cmd->add_option("--weights", o->weights, "weights of the block linears (and an untied LM head): f32, or int8/int4 blockwise-quantized at load (Q8_0/Q4_0)")->capture_default_str();
  auto tp_comm_dtype = std::make_shared<std::string>("f32");
  add_tp_comm_dtype_option(cmd, *tp_comm_dtype);
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      const WeightFormat weights = parse_weight_format(o->weights);
      TP_CHECK(o->samples >= 1 && o->max_new_tokens >= 1, ConfigError,
               "--samples and --max-new-tokens must be at least 1");
      Sampler::check(o->sampling);
      const ModelConfig config = io::read_model_config(o->model);
      std::unique_ptr<io::Tokenizer> tokenizer;
      std::vector<int32_t> prompt;
      std::string error;
      try {  // rank-local: files and parsing; agreed on before the first collective
        tokenizer = io::load_tokenizer(o->model, config.vocab_size);
        prompt = tokenizer->encode(o->prompt);
        TP_CHECK(!prompt.empty(), ConfigError, "the prompt encodes to no tokens; give a non-empty --prompt");
        TP_CHECK(int64_t(prompt.size()) < config.max_seq, ConfigError,
                 "the prompt has {} tokens but the model only {} positions", prompt.size(), config.max_seq);
      } catch (const Error& e) {
        error = e.what();
      }
      world.agree<ConfigError>(error);
      const int64_t B = o->samples, prompt_len = int64_t(prompt.size());
      // the prompt copies, the model's buffers and the KV cache grow with --samples
      TransformerLM::check_size(config, world.size(), B, std::min<int64_t>(prompt_len, 256));
      checked_product({B, config.layers, config.max_seq, config.hidden, 2}, "--samples x KV cache");
      std::vector<int32_t> prompts;
      for (int64_t b = 0; b < B; ++b) prompts.insert(prompts.end(), prompt.begin(), prompt.end());
      TransformerLM model(world, config, B, std::min<int64_t>(prompt_len, 256), 0,
                          {.tp_comm_dtype = parse_comm_dtype(*tp_comm_dtype), .inference = true, .weights = weights});
      // inference only (no gradients); int8/int4: each rank quantizes its slices while loading
      io::load_hf_checkpoint(world, model, o->model);
      Generator generator(model, B, prompt_len + std::min(config.max_seq - prompt_len, o->max_new_tokens - 1));
      const GenerationResult r = generator.generate(prompts.data(), prompt_len, o->max_new_tokens, o->sampling);
      for (int64_t b = 0; b < B; ++b) {
        const std::span<const int32_t> row(r.tokens.data() + b * r.new_tokens, size_t(r.new_tokens));
        print_rank0(world, fmt::format("{}--- sample {} ---\n{}{}\n", b == 0 ? "" : "\n", b + 1, o->prompt,
                                       tokenizer->decode(row)));
      }
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
