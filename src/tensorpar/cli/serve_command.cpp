// tensorpar serve: an OpenAI-compatible HTTP server (POST /v1/completions, GET /v1/models, /health,
// /metrics) over a tensor-parallel model, with continuous batching (infer/continuous_batcher.hpp).
//
// Threads and ranks: only the main thread of each rank calls MPI (MPI_THREAD_FUNNELED). On rank 0,
// cpp-httplib's handler threads validate a request, put it in a queue and wait on the request's own
// channel for its tokens. Every scheduler step, rank 0's main thread takes the queue's new requests
// and the cancellations (stop strings, disconnected clients), broadcasts them to the TP ranks as one
// JSON message, and then every rank applies them to its ContinuousBatcher and runs the same step, so
// all ranks stay in lock-step without exchanging tokens. When idle, rank 0 sleeps on the queue's
// condition variable and sends nothing; the other ranks wait in broadcast_string_patiently, which
// sleeps between polls, so an idle server takes no CPU. SIGINT/SIGTERM are blocked and polled
// (stop_signals.hpp): rank 0 sees one within 100 ms, fails the open requests (503), stops HTTP and
// broadcasts "stop"; every rank leaves the loop and exits 0. A signal that reaches only another rank
// is ignored: rank 0 decides.
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "tensorpar/cli/command.hpp"
#include "tensorpar/cli/stop_signals.hpp"
#include "tensorpar/comm/idle_broadcast.hpp"
#include "tensorpar/infer/continuous_batcher.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/io/tokenizer.hpp"
#include "tensorpar/model/transformer.hpp"

namespace tensorpar::cli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Connections the kernel queues for the accept thread (the kernel caps it at net.core.somaxconn).
constexpr int kListenBacklog = 512;

// SIGINT/SIGTERM stay blocked (cli/stop_signals.hpp) and rank 0's main thread polls them here
bool stop_requested() { return take_stop_signal() != 0; }

// A request the server refuses: HTTP status, OpenAI error type, message.
struct HttpError {
  int status;
  std::string type, message;
};

std::string error_body(const std::string& type, const std::string& message) {
  return json{{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}}.dump(
      -1, ' ', false, json::error_handler_t::replace);
}

struct Completion {
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;  // OpenAI's default
  SamplingOptions sampling{1.0f, 0, 1.0f, 0};
  std::vector<std::string> stop;
  bool stream = false;
};

// What rank 0's main thread hands one waiting handler.
struct Channel {
  std::mutex m;
  std::condition_variable cv;
  std::vector<int32_t> tokens;  // every token generated so far
  bool finished = false;        // the batcher is done with it (max_tokens or positions)
  std::string error;            // set instead when the request cannot complete
};

// Text of the generated tokens so far, cut at the first stop string, and how much of it can be sent
// now: not a tail that may still become a stop string, nor an incomplete UTF-8 character.
struct TextSoFar {
  std::string text;
  size_t sendable = 0;
  bool stopped = false;
};

TextSoFar text_so_far(const io::Tokenizer* tokenizer, std::span<const int32_t> tokens,
                      const std::vector<std::string>& stop, bool final) {
  TextSoFar r;
  if (!tokenizer) return r;
  r.text = tokenizer->decode(tokens);
  size_t cut = std::string::npos;
  for (const std::string& s : stop) cut = std::min(cut, r.text.find(s));
  if (cut != std::string::npos) {
    r.text.resize(cut);
    r.sendable = cut;
    r.stopped = true;
    return r;
  }
  if (final) {
    r.sendable = r.text.size();
    return r;
  }
  size_t hold = 0;
  for (const std::string& s : stop)
    for (size_t k = std::min(s.size() - 1, r.text.size()); k > hold; --k)
      if (r.text.compare(r.text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  // a UTF-8 lead byte without all its continuation bytes yet
  for (size_t back = 1; back <= std::min<size_t>(4, r.text.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(r.text[r.text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) hold = std::max(hold, back);
    break;
  }
  r.sendable = r.text.size() - hold;
  return r;
}

// The state rank 0's HTTP threads and its main thread share.
class Hub {
 public:
  Hub(const ModelConfig& config, const io::Tokenizer* tokenizer, std::string model_name, int64_t max_seq)
      : config_(config), tokenizer_(tokenizer), model_name_(std::move(model_name)), max_seq_(max_seq) {}

  Completion parse(const std::string& body) const;

  // Queues a request; its tokens arrive on the returned channel.
  std::pair<int64_t, std::shared_ptr<Channel>> submit(const Completion& c) {
    auto ch = std::make_shared<Channel>();
    std::lock_guard lock(m_);
    const int64_t id = next_id_++;
    if (closed_) {  // shutting down: nobody would ever answer it
      ch->error = "the server is shutting down";
      return {id, ch};
    }
    channels_[id] = ch;
    pending_.emplace_back(id, c);
    ++requests_total_;
    cv_.notify_one();
    return {id, ch};
  }
  // The client is gone or its stop string came: free the slot at the next step.
  void cancel(int64_t id) {
    std::lock_guard lock(m_);
    if (channels_.erase(id)) {
      cancels_.push_back(id);
      cv_.notify_one();
    }
  }

  // Main thread: the next step's message; blocks while there is nothing to do (`idle`), waking every
  // 100 ms to look at the stop flag.
  std::string next_step(bool idle) {
    std::unique_lock lock(m_);
    while (idle && pending_.empty() && cancels_.empty() && !stop_requested())
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    json msg{{"stop", stop_requested()}, {"cancel", cancels_}, {"add", json::array()}};
    for (auto& [id, c] : pending_)
      msg["add"].push_back({{"id", id},
                            {"prompt", c.prompt},
                            {"max_tokens", c.max_tokens},
                            {"temperature", c.sampling.temperature},
                            {"top_k", c.sampling.top_k},
                            {"top_p", c.sampling.top_p},
                            {"seed", c.sampling.seed}});
    pending_.clear();
    cancels_.clear();
    return msg.dump();
  }

  // Main thread: hands the step's tokens to their requests.
  void deliver(const std::vector<StepToken>& tokens) {
    std::lock_guard lock(m_);
    for (const StepToken& t : tokens) {
      auto it = channels_.find(t.id);
      if (it == channels_.end()) continue;  // cancelled meanwhile
      {
        std::lock_guard c(it->second->m);
        it->second->tokens.push_back(t.token);
        it->second->finished = t.last;
      }
      it->second->cv.notify_all();
      if (t.last) channels_.erase(it);
    }
    tokens_total_ += int64_t(tokens.size());
    const auto now = Clock::now();
    recent_.emplace_back(now, int64_t(tokens.size()));
    while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10)) recent_.pop_front();
  }
  void fail(int64_t id, const std::string& message) {
    std::lock_guard lock(m_);
    auto it = channels_.find(id);
    if (it == channels_.end()) return;
    {
      std::lock_guard c(it->second->m);
      it->second->error = message;
    }
    it->second->cv.notify_all();
    channels_.erase(it);
  }
  // Fails every open request and every later one.
  void fail_all(const std::string& message) {
    std::vector<int64_t> ids;
    {
      std::lock_guard lock(m_);
      closed_ = true;
      for (auto& [id, ch] : channels_) ids.push_back(id);
    }
    for (int64_t id : ids) fail(id, message);
  }
  void set_batch_state(int64_t active, int64_t waiting) {
    active_ = active;
    batcher_waiting_ = waiting;
  }
  void count_rejected() { ++rejected_total_; }

  std::string metrics() {
    std::lock_guard lock(m_);
    double per_s = 0;
    if (recent_.size() >= 2) {
      int64_t n = 0;
      for (size_t i = 1; i < recent_.size(); ++i) n += recent_[i].second;
      const double span = std::chrono::duration<double>(recent_.back().first - recent_.front().first).count();
      per_s = span > 0 ? double(n) / span : 0;
    }
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, double value) {
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
    };
    metric("tensorpar_requests_total", "counter", "completion requests accepted", double(requests_total_));
    metric("tensorpar_requests_rejected_total", "counter", "completion requests refused with a 4xx error",
           double(rejected_total_));
    metric("tensorpar_tokens_generated_total", "counter", "tokens generated", double(tokens_total_));
    metric("tensorpar_tokens_per_second", "gauge", "tokens generated per second over the last 10 s", per_s);
    metric("tensorpar_queue_length", "gauge", "requests waiting for a slot",
           double(int64_t(pending_.size()) + batcher_waiting_));
    metric("tensorpar_active_slots", "gauge", "requests being generated (KV-cache slots in use)", double(active_));
    return out;
  }

  const std::string& model_name() const { return model_name_; }
  TextSoFar text(std::span<const int32_t> tokens, const std::vector<std::string>& stop, bool final) const {
    std::lock_guard lock(tokenizer_m_);
    return text_so_far(tokenizer_, tokens, stop, final);
  }

 private:
  const ModelConfig& config_;
  const io::Tokenizer* tokenizer_;
  std::string model_name_;
  int64_t max_seq_;
  mutable std::mutex tokenizer_m_;  // the tokenizer is not promised to be thread-safe
  std::mutex m_;
  std::condition_variable cv_;
  int64_t next_id_ = 1;
  bool closed_ = false;
  std::deque<std::pair<int64_t, Completion>> pending_;
  std::vector<int64_t> cancels_;
  std::unordered_map<int64_t, std::shared_ptr<Channel>> channels_;
  std::deque<std::pair<Clock::time_point, int64_t>> recent_;
  std::atomic<int64_t> requests_total_{0}, rejected_total_{0}, tokens_total_{0}, active_{0}, batcher_waiting_{0};
};

// Fields: OpenAI's completion fields this server implements; the ones it does not are accepted only
// at their neutral value (n = 1, echo = false, penalties 0, ...); any other field is refused, so a
// typo never silently changes nothing.
Completion Hub::parse(const std::string& body) const {
  auto bad = [](const std::string& message) { return HttpError{400, "invalid_request_error", message}; };
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad(fmt::format("the body is not valid JSON ({})", e.what()));
  }
  if (!j.is_object()) throw bad("the body must be a JSON object");
  Completion c;
  bool has_prompt = false;
  auto integer = [&](const json& v, const std::string& key) {
    if (!v.is_number_integer()) throw bad(fmt::format("'{}' must be an integer", key));
    return v.get<int64_t>();
  };
  auto number = [&](const json& v, const std::string& key) {
    if (!v.is_number()) throw bad(fmt::format("'{}' must be a number", key));
    return v.get<double>();
  };
  for (auto& [key, v] : j.items()) {
    if (key == "model") {
      if (!v.is_string()) throw bad("'model' must be a string");
    } else if (key == "prompt") {
      has_prompt = true;
      if (v.is_array() && v.size() == 1 && v[0].is_string()) {
        // a batch of one prompt, as OpenAI clients send it
        std::lock_guard lock(tokenizer_m_);
        if (!tokenizer_) throw bad("this model has no tokenizer; send 'prompt' as an array of token ids");
        c.prompt = tokenizer_->encode(v[0].get<std::string>());
      } else if (v.is_string()) {
        std::lock_guard lock(tokenizer_m_);
        if (!tokenizer_) throw bad("this model has no tokenizer; send 'prompt' as an array of token ids");
        c.prompt = tokenizer_->encode(v.get<std::string>());
      } else if (v.is_array()) {
        for (const json& id : v) {
          if (!id.is_number_integer())
            throw bad("'prompt' must be a string or an array of token ids (integers)");
          const int64_t x = id.get<int64_t>();
          if (x < 0 || x >= config_.vocab_size)
            throw bad(fmt::format("prompt token {} is outside the model's vocabulary of {}", x, config_.vocab_size));
          c.prompt.push_back(int32_t(x));
        }
      } else {
        throw bad("'prompt' must be a string or an array of token ids");
      }
    } else if (key == "max_tokens") {
      if (!v.is_null()) c.max_tokens = integer(v, key);
      if (c.max_tokens < 1) throw bad("'max_tokens' must be at least 1");
    } else if (key == "temperature") {
      if (!v.is_null()) c.sampling.temperature = float(number(v, key));
      if (c.sampling.temperature < 0) throw bad("'temperature' must be >= 0");
    } else if (key == "top_p") {
      if (!v.is_null()) c.sampling.top_p = float(number(v, key));
      if (!(c.sampling.top_p > 0 && c.sampling.top_p <= 1)) throw bad("'top_p' must be in (0, 1]");
    } else if (key == "top_k") {
      const int64_t k = v.is_null() ? 0 : integer(v, key);
      if (k < -1) throw bad("'top_k' must be >= 0 (or -1: the whole vocabulary)");
      c.sampling.top_k = std::max<int64_t>(0, k);
    } else if (key == "seed") {
      if (!v.is_null()) {
        const int64_t s = integer(v, key);
        if (s < 0) throw bad("'seed' must be >= 0");
        c.sampling.seed = uint64_t(s);
      }
    } else if (key == "stream") {
      if (!v.is_boolean()) throw bad("'stream' must be true or false");
      c.stream = v.get<bool>();
    } else if (key == "stop") {
      if (v.is_string()) {
        c.stop.push_back(v.get<std::string>());
      } else if (v.is_array()) {
        for (const json& s : v) {
          if (!s.is_string()) throw bad("'stop' must be a string or an array of strings");
          c.stop.push_back(s.get<std::string>());
        }
      } else if (!v.is_null()) {
        throw bad("'stop' must be a string or an array of strings");
      }
      for (const std::string& s : c.stop)
        if (s.empty()) throw bad("a 'stop' string is empty");
      if (c.stop.size() > 4) throw bad("at most 4 'stop' strings");
      if (!c.stop.empty() && !tokenizer_) throw bad("'stop' needs a tokenizer, and this model has none");
    } else if (key == "n" || key == "best_of") {
      if (!(v.is_null() || (v.is_number_integer() && v.get<int64_t>() == 1)))
        throw bad(fmt::format("'{}' must be 1: this server returns one completion per request", key));
    } else if (key == "echo") {
      if (!(v.is_null() || v == false)) throw bad("'echo' is not supported; leave it false");
    } else if (key == "logprobs" || key == "suffix") {
      if (!v.is_null()) throw bad(fmt::format("'{}' is not supported; leave it null", key));
    } else if (key == "presence_penalty" || key == "frequency_penalty") {
      if (!(v.is_null() || (v.is_number() && v.get<double>() == 0)))
        throw bad(fmt::format("'{}' is not supported; leave it 0", key));
    } else if (key == "logit_bias") {
      if (!(v.is_null() || (v.is_object() && v.empty()))) throw bad("'logit_bias' is not supported");
    } else if (key == "user" || key == "stream_options") {
      // no effect here
    } else {
      throw bad(fmt::format("unknown field '{}'", key));
    }
  }
  if (!has_prompt) throw bad("'prompt' is required");
  if (c.prompt.empty()) throw bad("the prompt is empty (no tokens); give at least one token");
  const int64_t n = int64_t(c.prompt.size());
  if (n > max_seq_)
    throw bad(fmt::format("the prompt has {} tokens but the model only {} positions", n, max_seq_));
  // n new tokens need prompt + n - 1 positions (the last one is never fed back)
  if (n + c.max_tokens - 1 > max_seq_)
    throw bad(fmt::format("'max_tokens' {} is beyond the model's positions: a prompt of {} tokens leaves at most {}",
                          c.max_tokens, n, max_seq_ - n + 1));
  return c;
}

json usage(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

// The HTTP side, on rank 0 only.
void add_routes(httplib::Server& server, Hub& hub) {
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  server.Get("/v1/models", [&hub](const httplib::Request&, httplib::Response& res) {
    json models{{"object", "list"},
                {"data", {{{"id", hub.model_name()}, {"object", "model"}, {"created", 0}, {"owned_by", "tensorpar"}}}}};
    res.set_content(models.dump(), "application/json");
  });
  server.Get("/metrics", [&hub](const httplib::Request&, httplib::Response& res) {
    res.set_content(hub.metrics(), "text/plain; version=0.0.4");
  });
  server.Post("/v1/completions", [&hub](const httplib::Request& req, httplib::Response& res) {
    Completion c;
    try {
      c = hub.parse(req.body);
    } catch (const HttpError& e) {
      hub.count_rejected();
      res.status = e.status;
      res.set_content(error_body(e.type, e.message), "application/json");
      return;
    }
    auto [id, ch] = hub.submit(c);
    const std::string cmpl_id = fmt::format("cmpl-{}", id);
    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch()).count();
    const int64_t prompt_tokens = int64_t(c.prompt.size());
    auto choice = [](const std::string& text, const std::vector<int32_t>& ids, const char* finish) {
      return json{{"text", text},
                  {"index", 0},
                  {"logprobs", nullptr},
                  {"finish_reason", finish ? json(finish) : json(nullptr)},
                  {"token_ids", ids}};  // extension: the generated token ids of this piece
    };
    if (!c.stream) {
      std::vector<int32_t> tokens;
      TextSoFar text;
      bool done = false;
      std::unique_lock lock(ch->m);
      while (!done) {
        ch->cv.wait(lock, [&] { return ch->tokens.size() > tokens.size() || ch->finished || !ch->error.empty(); });
        if (!ch->error.empty()) {
          res.status = 503;
          res.set_content(error_body("server_error", ch->error), "application/json");
          return;
        }
        tokens = ch->tokens;
        text = hub.text(tokens, c.stop, ch->finished);
        done = ch->finished || text.stopped;
      }
      lock.unlock();
      if (text.stopped) hub.cancel(id);
      json body{{"id", cmpl_id},
                {"object", "text_completion"},
                {"created", created},
                {"model", hub.model_name()},
                {"choices", {choice(text.text, tokens, text.stopped ? "stop" : "length")}},
                {"usage", usage(prompt_tokens, int64_t(tokens.size()))}};
      res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
      return;
    }
    auto finished_ok = std::make_shared<std::atomic<bool>>(false);
    res.set_header("Cache-Control", "no-cache");  // events must reach the client as they come
    res.set_chunked_content_provider(
        "text/event-stream",
        [&hub, c, ch, id, cmpl_id, created, prompt_tokens, choice, finished_ok](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string event = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
            return sink.write(event.data(), event.size());
          };
          auto chunk = [&](const std::string& text, const std::vector<int32_t>& ids, const char* finish) {
            return json{{"id", cmpl_id},
                        {"object", "text_completion"},
                        {"created", created},
                        {"model", hub.model_name()},
                        {"choices", {choice(text, ids, finish)}}};
          };
          size_t sent_tokens = 0, sent_text = 0;
          for (;;) {
            std::unique_lock lock(ch->m);
            if (!ch->cv.wait_for(lock, std::chrono::milliseconds(250), [&] {
                  return ch->tokens.size() > sent_tokens || ch->finished || !ch->error.empty();
                })) {
              // Nothing yet (waiting for a slot): an SSE comment, which clients ignore, so that a
              // client gone meanwhile shows as a failed write and gives up its place in the queue.
              lock.unlock();
              static const std::string comment = ": waiting\n\n";
              if (!sink.write(comment.data(), comment.size())) {
                hub.cancel(id);
                return false;
              }
              continue;
            }
            if (!ch->error.empty()) {
              lock.unlock();
              send(json::parse(error_body("server_error", ch->error)));
              return false;
            }
            const std::vector<int32_t> tokens = ch->tokens;
            const bool finished = ch->finished;
            lock.unlock();
            const TextSoFar text = hub.text(tokens, c.stop, finished);
            const bool last = finished || text.stopped;
            std::vector<int32_t> ids(tokens.begin() + int64_t(sent_tokens), tokens.end());
            const size_t from = std::min(sent_text, text.sendable);
            json j = chunk(text.text.substr(from, text.sendable - from), ids,
                           last ? (text.stopped ? "stop" : "length") : nullptr);
            if (last) j["usage"] = usage(prompt_tokens, int64_t(tokens.size()));
            sent_tokens = tokens.size();
            sent_text = std::max(sent_text, text.sendable);
            if (!send(j)) {  // the client is gone: free its slot
              hub.cancel(id);
              return false;
            }
            if (last) {
              if (text.stopped) hub.cancel(id);
              finished_ok->store(true);
              static const std::string done = "data: [DONE]\n\n";
              sink.write(done.data(), done.size());
              sink.done();
              return true;
            }
          }
        },
        [&hub, id, finished_ok](bool) {
          if (!finished_ok->load()) hub.cancel(id);  // ended early, however it happened
        });
  });
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own error
    res.set_content(error_body(res.status == 404 ? "not_found_error" : "invalid_request_error",
                               fmt::format("{} {}: HTTP {}", req.method, req.path, res.status)),
                    "application/json");
  });
}

}  // namespace

void add_serve_command(CLI::App& app, Runner& run) {
  auto* cmd = app.add_subcommand("serve", "serve a saved model over HTTP (OpenAI-compatible /v1/completions)");
  struct Options {
    std::string model, host = "127.0.0.1";
    int port = 8000;
    int64_t max_batch = 8;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "model directory (config.json + model.safetensors)")->required();
  cmd->add_option("--host", o->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "TCP port (0: any free port, printed at start)")->capture_default_str();
  cmd->add_option("--max-batch", o->max_batch, "requests decoded together (KV-cache slots)")->capture_default_str();
  cmd->callback([=, &run] {
    run = [=](ProcessGroup& world) {
      TP_CHECK(o->max_batch >= 1, ConfigError, "--max-batch must be at least 1 (got {})", o->max_batch);
      TP_CHECK(o->port >= 0 && o->port <= 65535, ConfigError, "--port must be in 0..65535 (got {})", o->port);
      const ModelConfig config = io::read_model_config(o->model);
      std::unique_ptr<io::Tokenizer> tokenizer;
      try {  // without a tokenizer the server takes token-id prompts only
        tokenizer = io::load_tokenizer(o->model, config.vocab_size);
      } catch (const ConfigError&) {
      }
      // prompts of up to 256 positions in one pass, as generate runs them
      const int64_t chunk = std::min<int64_t>(256, config.max_seq);
      TransformerLM model(world, config, o->max_batch, (chunk + o->max_batch - 1) / o->max_batch, 0,
                          {.inference = true});  // no gradients
      io::load_hf_checkpoint(world, model, o->model);
      ContinuousBatcher batcher(model, o->max_batch, config.max_seq, chunk);

      const bool root = world.rank() == 0;
      std::string name = std::filesystem::path(o->model).filename().string();
      if (name.empty()) name = std::filesystem::path(o->model).parent_path().filename().string();
      Hub hub(config, tokenizer.get(), name, config.max_seq);
      httplib::Server server;
      socket_t listening = INVALID_SOCKET;  // the server's socket, seen when httplib sets its options
      std::thread http;
      std::string error;
      int port = o->port;
      if (root) {
        server.new_task_queue = [] { return new httplib::ThreadPool(64); };  // one per streaming client
        add_routes(server, hub);
        // httplib's default also sets SO_REUSEPORT, with which a second server on a busy port starts
        // silently and steals half the connections; keep only SO_REUSEADDR (restart over TIME_WAIT)
        server.set_socket_options([&listening](socket_t sock) {
          int yes = 1;
          setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
          listening = sock;
        });
        port = o->port == 0 ? server.bind_to_any_port(o->host) : (server.bind_to_port(o->host, o->port) ? o->port : -1);
        // Debian's compiled httplib listens with a backlog of 5: a burst of more clients overflows the
        // accept queue and some of them lose their first request (seen with 16 at once on a busy
        // machine). Listening again on the bound socket only raises the backlog (Linux).
        if (port >= 0 && listening != INVALID_SOCKET) ::listen(listening, kListenBacklog);
        if (port < 0)
          error = fmt::format("cannot listen on {}:{} (in use, or not an address of this machine); pick another --port",
                              o->host, o->port);
      }
      world.agree<ConfigError>(error);
      std::signal(SIGPIPE, SIG_IGN);  // a vanished client is a failed write, not a dead server
      if (root) http = std::thread([&server] { server.listen_after_bind(); });
      // however the loop ends (stop, or an exception unwinding), the HTTP side ends before its state
      struct StopHttp {
        Hub& hub;
        httplib::Server& server;
        std::thread& http;
        ~StopHttp() { finish(); }
        void finish() {
          if (!http.joinable()) return;
          hub.fail_all("the server is shutting down");
          server.stop();
          http.join();
        }
      } stop_http{hub, server, http};
      print_rank0(world, fmt::format("tensorpar serve: listening on http://{}:{} (model {}, TP={}, max batch {})\n",
                                     o->host, port, name, world.size(), o->max_batch));
      // Test hook (tests/cli/test_serve.cpp): TENSORPAR_TEST_SERVE_STEP_DELAY_MS paces the decode loop,
      // so that a test of a disconnecting client does not race a tiny model that decodes 250 tokens
      // in a few milliseconds. Rank 0 sleeps; the others wait for it in the next broadcast.
      const char* delay_env = std::getenv("TENSORPAR_TEST_SERVE_STEP_DELAY_MS");
      const auto step_delay = std::chrono::milliseconds(delay_env ? std::atoi(delay_env) : 0);
      for (;;) {
        std::string message;
        if (root) message = hub.next_step(batcher.active() == 0 && batcher.waiting() == 0);
        broadcast_string_patiently(world, message, 0);
        const json step = json::parse(message);
        if (step.at("stop").get<bool>()) break;
        for (const json& id : step.at("cancel")) batcher.cancel(id.get<int64_t>());
        for (const json& a : step.at("add")) {
          BatchRequest r{a.at("id").get<int64_t>(), a.at("prompt").get<std::vector<int32_t>>(),
                         a.at("max_tokens").get<int64_t>(),
                         SamplingOptions{a.at("temperature").get<float>(), a.at("top_k").get<int64_t>(),
                                         a.at("top_p").get<float>(), a.at("seed").get<uint64_t>()}};
          try {  // validated by rank 0 already; the same outcome on every rank in any case
            batcher.add(std::move(r));
          } catch (const ConfigError& e) {
            if (root) hub.fail(a.at("id").get<int64_t>(), e.what());
          }
        }
        const std::vector<StepToken> tokens = batcher.step();
        if (root) {
          // state first: a client woken by its last token may read /metrics at once
          hub.set_batch_state(batcher.active(), batcher.waiting());
          hub.deliver(tokens);
          if (step_delay.count() > 0 && !tokens.empty()) std::this_thread::sleep_for(step_delay);
        }
      }
      stop_http.finish();
      print_rank0(world, "tensorpar serve: stopped\n");
      return 0;
    };
  });
}

}  // namespace tensorpar::cli
