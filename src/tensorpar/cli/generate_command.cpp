// tensorpar generate: continue a prompt with a saved model using the KV cache (infer/generator.hpp):
// the prompt is run once, then each new token costs one pass over the weights for one position.
// Greedy by default (--temperature 0), as Hugging Face's generate().
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/comm/compressed_collectives.hpp"
#include "tensorpar/comm/mesh.hpp"
#include "tensorpar/infer/generator.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/pipeline_schedule.hpp"

namespace tensorpar::cli {

namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TP_CHECK(used > 0 && item.find_first_not_of(" \t", used) == std::string::npos, ConfigError,
             "--prompt-ids: '{}' is not an integer; give comma-separated token ids like 1,2,3", item);
    // range-checked here: the cast would wrap ids beyond 32 bits into valid-looking ones
    TP_CHECK(v >= 0 && v <= INT32_MAX, ConfigError,
             "--prompt-ids: token id {} is outside [0, 2^31-1]; give ids from the model's vocabulary", item);
    ids.push_back(int32_t(v));
  }
  return ids;
}

// This process's resident memory in bytes from /proc/self/status: "VmRSS" (now) or "VmHWM" (peak);
// 0 where the file does not exist.
int64_t status_kib_bytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("generate", "continue a prompt with a saved model, using a KV cache");
  struct Options {
    std::string model, prompt, prompt_ids;
    int64_t max_new_tokens = 64;
    SamplingOptions sampling{0.0f, 0, 1.0f, 0};
    bool json = false;
    std::string weights = "f32";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "model directory (config.json + model.safetensors)")->required();
  auto* prompt = cmd->add_option("--prompt", o->prompt, "text to continue");
  auto* ids = cmd->add_option("--prompt-ids", o->prompt_ids, "token ids to continue, comma-separated: 1,2,3");
  prompt->excludes(ids);
  cmd->add_option("--max-new-tokens,-n", o->max_new_tokens, "tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->sampling.temperature, "softmax temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->sampling.seed, "sampling seed")->capture_default_str();
  auto pp = std::make_shared<int>(1);
  cmd->add_option("--pp", *pp,
                  "pipeline stages: the layers split into P contiguous stages, each on ranks/P tensor-parallel ranks, "
                  "each caching its own layers' keys and values")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print {\"tokens\": [...], \"text\": ..., \"tokens_per_s\": ...} as the last line");
  cmd->add_option("--weights", o->weights, "weights of the block linears (and an untied LM head): f32, or int8/int4 blockwise-quantized at load (Q8_0/Q4_0)")->capture_default_str();
  auto tp_comm_dtype = std::make_shared<std::string>("f32");
  add_tp_comm_dtype_option(cmd, *tp_comm_dtype);
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      const WeightFormat weights = parse_weight_format(o->weights);
      TP_CHECK(!o->prompt.empty() || !o->prompt_ids.empty(), ConfigError, "give --prompt TEXT or --prompt-ids 1,2,3");
      TP_CHECK(o->max_new_tokens >= 1, ConfigError, "--max-new-tokens must be at least 1");
      Sampler::check(o->sampling);
      const ModelConfig config = io::read_model_config(o->model);
      std::unique_ptr<io::Tokenizer> tokenizer;
      std::vector<int32_t> context;
      std::string error;
      try {  // rank-local: files and parsing; agreed on before the first collective
        if (o->prompt_ids.empty()) {
          tokenizer = io::load_tokenizer(o->model, config.vocab_size);
          context = tokenizer->encode(o->prompt);
        } else {
          context = parse_ids(o->prompt_ids);
          try {  // ids need no tokenizer; without one the output has no text
            tokenizer = io::load_tokenizer(o->model, config.vocab_size);
          } catch (const ConfigError&) {
          }
        }
        TP_CHECK(!context.empty(), ConfigError, "the prompt encodes to no tokens; give a non-empty prompt");
        for (int32_t id : context)
          TP_CHECK(id >= 0 && id < config.vocab_size, ConfigError,
                   "prompt token {} is outside the model's vocabulary of {}", id, config.vocab_size);
        TP_CHECK(int64_t(context.size()) <= config.max_seq, ConfigError,
                 "the prompt has {} tokens but the model only {} positions", context.size(), config.max_seq);
      } catch (const Error& e) {
        error = e.what();
      }
      world.agree<ConfigError>(error);
      const int64_t prompt_len = int64_t(context.size());
      // the last new token is never fed back; written so a huge --max-new-tokens cannot overflow
      const int64_t cache_len = prompt_len + std::min(config.max_seq - prompt_len, o->max_new_tokens - 1);
      // activation buffers for up to 256 prompt positions per pass; longer prompts go in chunks
      // --pp: the world is tp x pp ranks (no replicas), each stage its own layers
      TP_CHECK(*pp >= 1, ConfigError, "--pp must be at least 1 (got {})", *pp);
      Mesh mesh(world, world.size() / *pp, *pp);
      ProcessGroup& tp = mesh.tp();
      const std::vector<int> first = split_layers(int(config.layers), *pp);
      const int stage = mesh.pp().rank();
      TransformerLM model(tp, config, 1, std::min<int64_t>(prompt_len, 256), 0,
                          {.tp_comm_dtype = parse_comm_dtype(*tp_comm_dtype), .inference = true, .weights = weights},
                          {first[size_t(stage)], first[size_t(stage) + 1] - first[size_t(stage)]});
      if (*pp > 1) model.set_pipeline(&mesh.pp());
      // inference only (no gradients); int8/int4: each rank quantizes its slices while loading
      io::load_hf_checkpoint(tp, model, o->model);
      Generator generator(model, 1, std::max(cache_len, prompt_len));
      const GenerationResult r = generator.generate(context.data(), prompt_len, o->max_new_tokens, o->sampling);
      const double total = r.prefill_seconds + r.decode_seconds;
      const double tokens_per_s = total > 0 ? double(r.new_tokens) / total : 0.0;
      const double decode_per_s = r.decode_seconds > 0 ? double(r.new_tokens - 1) / r.decode_seconds : 0.0;
      const std::string text = tokenizer ? tokenizer->decode(r.tokens) : std::string();
      if (o->json) {
        nlohmann::json j{{"tokens", r.tokens},
                         {"text", tokenizer ? nlohmann::json(text) : nlohmann::json(nullptr)},
                         {"tokens_per_s", tokens_per_s},
                         {"decode_tokens_per_s", decode_per_s},
                         {"prefill_s", r.prefill_seconds},
                         {"prompt_tokens", prompt_len},
                         {"tp", tp.size()},
                         {"pp", *pp},
                         {"weights", weight_format_name(weights)},
                         // rank 0's resident memory after generating, and its peak (which includes
                         // the f32 weights as loaded, before quantization freed them)
                         {"rss_bytes", status_kib_bytes("VmRSS")},
                         {"peak_rss_bytes", status_kib_bytes("VmHWM")}};
        print_rank0(world, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
      } else {
        std::string ids_text;
        for (int32_t id : r.tokens) ids_text += (ids_text.empty() ? "" : ",") + std::to_string(id);
        print_rank0(world, fmt::format("{}{}\n-- {} tokens, {:.1f} tokens/s ({:.1f} tokens/s after the prompt), TP={}\n",
                                       tokenizer ? o->prompt : "", tokenizer ? text : ids_text, r.new_tokens,
                                       tokens_per_s, decode_per_s, tp.size()));
      }
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
