// tensorpar sample: load a saved model at any TP degree and print continuations of a prompt,
// recomputing the whole context for every new token (simple; `generate` uses a KV cache).
#include "tensorpar/cli/command.hpp"
#include "tensorpar/infer/sampler.hpp"
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
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--prompt", o->prompt, "text to continue")->capture_default_str();
  cmd->add_option("--max-new-tokens,-n", o->max_new_tokens, "tokens to generate per sample")->capture_default_str();
  cmd->add_option("--samples", o->samples, "how many continuations")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "softmax temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "sampling seed")->capture_default_str();
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      const ModelConfig config = io::read_model_config(o->model);
      std::unique_ptr<io::Tokenizer> tokenizer;
      std::string error;
      try {
        tokenizer = io::load_tokenizer(o->model, config.vocab_size);
      } catch (const Error& e) {
        error = e.what();
      }
      world.agree<ConfigError>(error);
      TransformerLM model(world, config, 1, config.max_seq, 0);
      io::load_hf_checkpoint(world, model, o->model);
      Sampler sampler(o->sampling);
      std::vector<float> logits(size_t(config.vocab_size));
      for (int64_t s = 0; s < o->samples; ++s) {
        std::vector<int32_t> context = tokenizer->encode(o->prompt);
        TP_CHECK(!context.empty(), ConfigError, "the prompt encodes to no tokens; give a non-empty --prompt");
        const size_t prompt_len = context.size();
        for (int64_t i = 0; i < o->max_new_tokens; ++i) {
          const int64_t T = std::min<int64_t>(int64_t(context.size()), config.max_seq);
          model.last_logits(logits.data(), context.data() + context.size() - size_t(T), 1, T);
          context.push_back(sampler.sample(logits, uint64_t(s * o->max_new_tokens + i)));
        }
        const std::string text = tokenizer->decode(std::span(context).subspan(prompt_len));
        print_rank0(world, fmt::format("{}--- sample {} ---\n{}{}\n", s == 0 ? "" : "\n", s + 1, o->prompt, text));
      }
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
