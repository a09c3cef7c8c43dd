#include "tensorpar/train/plan.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "tensorpar/core/error.hpp"
#include "tensorpar/model/memory.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"

namespace tensorpar {

namespace {

void add(CommStats& s, Collective c, int64_t calls, int64_t bytes_each) {
  s.calls[size_t(c)] += calls;
  s.bytes[size_t(c)] += calls * bytes_each;
}

bool gpt2(const ModelConfig& c) { return c.family == ModelFamily::Gpt2; }

// Key/value heads one rank holds: its share, or the one head it replicates when kv < t.
int64_t kv_heads_local(const ModelConfig& c, int tp) {
  const int64_t k = c.kv_heads_or_heads();
  return k >= tp ? k / tp : 1;
}

// Weight elements of one block's four GEMMs on one rank (the FLOP count's per-token multiply-adds).
double block_gemm_weights(const ModelConfig& c, int tp) {
  const double h = double(c.hidden), hd = double(c.head_dim()), f = double(c.ffn_or_default()) / tp;
  const double qkv = (double(c.heads) / tp + 2.0 * double(kv_heads_local(c, tp))) * hd * h;
  const double gate = gpt2(c) ? 1 : 2;
  return qkv + h * h / tp + gate * f * h + f * h;
}

// Time of one kind of collective: `calls` calls moving `bytes` in total over p ranks at B bytes/s.
double collective_seconds(Collective kind, int64_t calls, int64_t bytes, int p, double bw, double latency) {
  if (p <= 1 || calls == 0) return 0;
  const double steps = kind == Collective::AllReduce ? 2.0 * (p - 1) : double(p - 1);  // ring
  return steps / p * double(bytes) / bw + double(calls) * steps * latency;
}

double comm_seconds(const CommStats& s, int p, double bw, double latency) {
  double t = 0;
  for (Collective c : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter})
    t += collective_seconds(c, s.count(c), s.bytes[size_t(c)], p, bw, latency);
  return t;
}

}  // namespace

double PlanHardware::flops_for(int tp) const {
  return tp >= 0 && size_t(tp) < flops_by_tp.size() && flops_by_tp[size_t(tp)] > 0 ? flops_by_tp[size_t(tp)] : flops;
}

int64_t parameter_elements_per_rank(const ModelConfig& c, int tp) {
  const int64_t h = c.hidden, hd = c.head_dim(), f = c.ffn_or_default() / tp, V = padded_vocab_size(c.vocab_size, tp) / tp;
  const int64_t qkv_rows = (c.heads / tp + 2 * kv_heads_local(c, tp)) * hd;
  int64_t block = 0, rest = V * h;
  if (gpt2(c)) {
    // ln1, qkv (+bias), proj (+ replicated bias), ln2, fc (+bias), proj (+ replicated bias)
    block = 2 * h + qkv_rows * (h + 1) + h * (h / tp) + h + 2 * h + f * (h + 1) + h * f + h;
    rest += c.max_seq * h + 2 * h;
  } else {
    block = h + qkv_rows * h + h * (h / tp) + h + 2 * f * h + h * f;
    rest += h + (c.tie_embeddings ? 0 : V * h);
  }
  return c.layers * block + rest;
}

int64_t grad_arena_elements_per_rank(const ModelConfig& c, int tp) {
  const int64_t h = c.hidden, hd = c.head_dim(), f = c.ffn_or_default() / tp, V = padded_vocab_size(c.vocab_size, tp) / tp;
  const int64_t qkv_rows = (c.heads / tp + 2 * kv_heads_local(c, tp)) * hd;
  constexpr int64_t kAlign = int64_t(Tensor::kAlignment / sizeof(float));
  auto sum = [](std::initializer_list<int64_t> sizes) {
    int64_t total = 0;
    for (int64_t n : sizes) total += (n + kAlign - 1) / kAlign * kAlign;
    return total;
  };
  // the tensors of parameter_elements_per_rank, each rounded up as TransformerLM's arena places them
  if (gpt2(c))
    return c.layers * sum({h, h, qkv_rows * h, qkv_rows, h * (h / tp), h, h, h, f * h, f, h * f, h}) +
           sum({V * h, c.max_seq * h, h, h});
  return c.layers * sum({h, qkv_rows * h, h * (h / tp), h, 2 * f * h, h * f}) +
         sum({V * h, h, c.tie_embeddings ? 0 : V * h});
}

int64_t parameter_tensor_count(const ModelConfig& c) {
  if (gpt2(c)) return 2 + 12 * c.layers + 2;  // wte, wpe; 12 per block; final LayerNorm
  return 1 + 6 * c.layers + 1 + (c.tie_embeddings ? 0 : 1);
}

void predict_step_comm(const PlanModel& m, int tp, int dp, int64_t micro_batch, CommStats& tp_comm,
                       CommStats& dp_comm, CommStats& kv_comm) {
  tp_comm = dp_comm = kv_comm = {};
  const ModelConfig& c = m.model;
  const int64_t N = micro_batch * m.seq, h = c.hidden, L = c.layers, f32 = 4;
  const int64_t act = N * h * f32;  // one (tokens, hidden) activation; SP counts the gathered size too
  const bool sp = m.compute.sequence_parallel && tp > 1;
  const bool full = m.compute.recompute == Recompute::Full;
  if (!sp) {
    // forward: embedding g, 2 per block (attention and MLP row-parallel outputs);
    // backward: LM head f, 2 per block (the column-parallel inputs), full recomputation's reruns
    add(tp_comm, Collective::AllReduce, 1 + 2 * L + 1 + 2 * L + (full ? L - 1 : 0), act);
  } else {
    // forward: each block gathers for qkv and fc, scatters after proj and MLP; embedding scatters,
    // LM head gathers. backward: each row-parallel gathers dY, each column-parallel gathers X again and
    // scatters dX; LM head gathers + scatters; embedding gathers. Full recomputation reruns the
    // attention (gather + scatter) and the MLP's gather, per block but the last.
    add(tp_comm, Collective::AllGather, 2 * L + 1 + 1 + 4 * L + 1 + (full ? 2 * (L - 1) : 0), act);
    add(tp_comm, Collective::ReduceScatter, 1 + 2 * L + 1 + 2 * L + (full ? L - 1 : 0), act);
    // the replicated norms (and GPT-2's positions) saw only this rank's tokens: one packed all-reduce
    const int64_t partial = gpt2(c) ? L * 4 * h + 2 * h + c.max_seq * h : L * 2 * h + h;
    add(tp_comm, Collective::AllReduce, 1, partial * f32);
  }
  // vocabulary-parallel cross-entropy: row maxima, then [sum of exponentials | target logit]
  add(tp_comm, Collective::AllReduce, 1, N * f32);
  add(tp_comm, Collective::AllReduce, 1, 2 * N * f32);
  add(tp_comm, Collective::AllReduce, 1, 8);  // clip_grad_norm: the squared norm (double)
  // replicated GQA heads: each layer's key/value gradients summed over the ranks sharing them
  if (c.kv_heads_or_heads() < tp) add(kv_comm, Collective::AllReduce, L, 2 * c.head_dim() * h * f32);
  if (dp > 1) {
    const int64_t grads = parameter_elements_per_rank(c, tp) * f32;
    if (m.zero1) {
      // train/zero_optimizer.hpp with one bucket (--dp-bucket-mb 0, or an arena under the bucket
      // size; more buckets: the same bytes in more calls): reduce-scatter the gradient arena
      // (alignment padding included), all-gather the updated weights through it, and the gradient
      // norm's sum of squares over the shards (a double)
      const int64_t arena = grad_arena_elements_per_rank(c, tp) * f32;
      add(dp_comm, Collective::ReduceScatter, 1, arena);
      add(dp_comm, Collective::AllGather, 1, arena);
      add(dp_comm, Collective::AllReduce, 1, 8);
    } else {  // the trainer: one all-reduce per parameter tensor, then the loss (double)
      dp_comm.calls[size_t(Collective::AllReduce)] += parameter_tensor_count(c);
      dp_comm.bytes[size_t(Collective::AllReduce)] += grads;
    }
    add(dp_comm, Collective::AllReduce, 1, 8);
  }
}

double activation_bytes_formula(const ModelConfig& c, int64_t batch, int64_t seq, int tp,
                                const TransformerOptions& o) {
  MemoryShape shape{c, batch, seq, tp, o};
  const double N = double(batch * seq), h = double(c.hidden), t = tp;
  const double r = o.sequence_parallel && tp > 1 ? t : 1;
  const double norm_stats = gpt2(c) ? 2 : 1;
  const double V = double(padded_vocab_size(c.vocab_size, tp)) / t;
  // the final norm's input and output and statistics (rows outside the TP region), the LM head's
  // logits and per-row max and sum of exponentials, its bf16 input copy
  const double head = 4 * N / r * (2 * h + norm_stats) + 4 * N * (V + 2) +
                      (o.precision == Precision::BF16 ? 2 * N * h : 0);
  // model/memory.hpp's formula gives each rank k/t key/value heads; with k < t each rank replicates one
  const double kv_extra = 4 * N * 2 * double(c.head_dim()) * (double(kv_heads_local(c, tp)) - double(c.kv_heads_or_heads()) / t);
  // (full recomputation keeps one set of a block's buffers for all blocks)
  const double kv_sets = o.recompute == Recompute::Full ? 1 : double(c.layers);
  return double(c.layers) * activation_bytes_per_layer_formula(shape) + kv_sets * kv_extra + head;
}

double step_flops_per_rank(const ModelConfig& c, int64_t batch, int64_t seq, int tp, const TransformerOptions& o) {
  const double N = double(batch * seq), L = double(c.layers), h = double(c.hidden);
  const double V = double(padded_vocab_size(c.vocab_size, tp)) / tp;
  const double block_gemm = 2 * N * block_gemm_weights(c, tp);
  // causal attention: scores Q K^T and mixing P V, half of the (s x s) square each
  const double attention = 2 * 2 * N * double(seq) * h / tp / 2;
  const double forward = L * (block_gemm + attention) + 2 * N * V * h;
  double flops = 3 * forward;  // backward: two GEMMs per forward GEMM
  if (o.recompute == Recompute::Attention) flops += L * attention;
  if (o.recompute == Recompute::Full) flops += L * (block_gemm + attention);
  return flops;
}

std::string tp_invalid_reason(const PlanModel& m, int tp) {
  try {
    m.model.validate(tp);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::vector<LayoutPlan> plan_layouts(const PlanModel& m, const PlanHardware& hw) {
  TP_CHECK(hw.hosts >= 1 && hw.ranks_per_host >= 1, ConfigError,
           "--hosts and --ranks-per-host must be at least 1 (got {} and {})", hw.hosts, hw.ranks_per_host);
  TP_CHECK(m.global_batch >= 1 && m.seq >= 1, ConfigError, "--global-batch and --seq must be at least 1 (got {} and {})",
           m.global_batch, m.seq);
  TP_CHECK(hw.intra_bw > 0 && hw.inter_bw > 0 && hw.flops > 0, ConfigError,
           "bandwidths and the FLOP rate must be positive");
  const int world = hw.hosts * hw.ranks_per_host, R = hw.ranks_per_host;
  std::vector<LayoutPlan> plans;
  for (int tp = 1; tp <= world; ++tp) {
    if (world % tp != 0) continue;
    LayoutPlan p;
    p.tp = tp;
    p.dp = world / tp;
    p.invalid = tp_invalid_reason(m, tp);
    if (p.invalid.empty() && m.global_batch % p.dp != 0)
      p.invalid = fmt::format("the global batch of {} sequences does not split over {} data-parallel replicas",
                              m.global_batch, p.dp);
    p.micro_batch = m.global_batch / p.dp;
    if (p.invalid.empty() && m.compute.sequence_parallel && tp > 1 && (p.micro_batch * m.seq) % tp != 0)
      p.invalid = fmt::format("sequence parallelism needs the {} tokens of a micro-batch divisible by {}",
                              p.micro_batch * m.seq, tp);
    if (!p.invalid.empty()) {
      plans.push_back(p);
      continue;
    }
    // placement: consecutive ranks per host and per TP group (comm/mesh.hpp, --map-by slot)
    const bool tp_in_host = tp <= R && R % tp == 0;
    p.tp_crosses_hosts = !tp_in_host;
    const int dp_per_host = tp_in_host ? R / tp : 1;  // ranks of one DP group on one host
    p.dp_crosses_hosts = p.dp > dp_per_host;

    const ModelConfig& c = m.model;
    p.parameters_per_rank = parameter_elements_per_rank(c, tp);
    const double P = double(p.parameters_per_rank);
    p.memory.weights = 4 * P;
    p.memory.gradients = 4 * P;
    p.memory.optimizer = 8 * P / (m.zero1 ? p.dp : 1);
    p.memory.activations = activation_bytes_formula(c, p.micro_batch, m.seq, tp, m.compute);
    // the residual-stream gradient and a norm's gradient (rows outside the TP region); bf16 weight
    // copies of the GEMMs; sequence parallelism's gathered and partial (tokens, hidden) workspaces
    const bool sp = m.compute.sequence_parallel && tp > 1;
    const double N = double(p.micro_batch * m.seq), h = double(c.hidden);
    p.memory.buffers = 2 * 4 * N / (sp ? tp : 1) * h + (m.compute.precision == Precision::BF16 ? 2 * P : 0) +
                       (sp ? 2 * 4 * N * h : 0);
    p.memory.overhead = hw.overhead_per_rank;
    p.fits = hw.memory_per_host <= 0 || p.memory.total() * R <= hw.memory_per_host;

    predict_step_comm(m, tp, p.dp, p.micro_batch, p.tp_comm, p.dp_comm, p.kv_comm);
    p.flops_per_rank = step_flops_per_rank(c, p.micro_batch, m.seq, tp, m.compute);
    p.compute_s = p.flops_per_rank / hw.flops_for(tp);
    // a link shared by the groups that cross it together: R / (the group's ranks on one host)
    auto measured = [tp](const std::vector<double>& v) { return size_t(tp) < v.size() ? v[size_t(tp)] : 0.0; };
    double tp_bw = p.tp_crosses_hosts ? hw.inter_bw / std::max(1, R / std::min(tp, R)) : hw.intra_bw;
    if (measured(hw.tp_bw_by_tp) > 0) tp_bw = measured(hw.tp_bw_by_tp);
    const double tp_lat = p.tp_crosses_hosts ? hw.inter_latency : hw.intra_latency;
    p.tp_comm_s = comm_seconds(p.tp_comm, tp, tp_bw, tp_lat);
    const int kv_sharing = int(std::max<int64_t>(1, tp / c.kv_heads_or_heads()));
    p.tp_comm_s += comm_seconds(p.kv_comm, kv_sharing, tp_bw, tp_lat);
    double dp_bw = p.dp_crosses_hosts ? hw.inter_bw / std::max(1, R / dp_per_host) : hw.intra_bw;
    if (measured(hw.dp_bw_by_tp) > 0) dp_bw = measured(hw.dp_bw_by_tp);
    p.dp_comm_s = comm_seconds(p.dp_comm, p.dp, dp_bw, p.dp_crosses_hosts ? hw.inter_latency : hw.intra_latency);
    p.step_s = p.compute_s + p.tp_comm_s + p.dp_comm_s;
    p.tokens_per_s = double(m.global_batch * m.seq) / p.step_s;
    plans.push_back(p);
  }
  return plans;
}

int recommend(const std::vector<LayoutPlan>& plans) {
  int best = -1;
  for (size_t i = 0; i < plans.size(); ++i) {
    const LayoutPlan& p = plans[i];
    if (!p.invalid.empty() || !p.fits) continue;
    if (best < 0 || p.step_s < plans[size_t(best)].step_s) best = int(i);
  }
  return best;
}

namespace {

// "<number><unit>" -> (number, lower-case unit without spaces)
bool split_number(const std::string& text, double& value, std::string& unit) {
  size_t used = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  unit.clear();
  for (char ch : text.substr(used))
    if (!std::isspace(static_cast<unsigned char>(ch))) unit += char(std::tolower(static_cast<unsigned char>(ch)));
  return std::isfinite(value) && value >= 0;
}

}  // namespace

double parse_bytes(const std::string& text, const std::string& option) {
  double v = 0;
  std::string u;
  if (split_number(text, v, u)) {
    const std::pair<const char*, double> units[] = {{"", 1},     {"b", 1},       {"kb", 1e3},  {"mb", 1e6},
                                                    {"gb", 1e9}, {"tb", 1e12},   {"kib", 1024}, {"mib", 1 << 20},
                                                    {"gib", double(1ull << 30)}, {"tib", double(1ull << 40)}};
    for (const auto& [name, scale] : units)
      if (u == name) return v * scale;
  }
  throw ConfigError(fmt::format("{} '{}' is not a size; write it like 24GiB, 512MB or 1e9", option, text));
}

double parse_bandwidth(const std::string& text, const std::string& option) {
  double v = 0;
  std::string u;
  if (split_number(text, v, u) && v > 0) {
    const std::pair<const char*, double> units[] = {
        {"b/s", 1},       {"kb/s", 1e3},      {"mb/s", 1e6},          {"gb/s", 1e9},
        {"kib/s", 1024},  {"mib/s", 1 << 20}, {"gib/s", double(1ull << 30)}, {"bit", 1.0 / 8},
        {"kbit", 1e3 / 8}, {"mbit", 1e6 / 8},  {"gbit", 1e9 / 8},      {"", 1}};
    for (const auto& [name, scale] : units)
      if (u == name) return v * scale;
  }
  throw ConfigError(fmt::format("{} '{}' is not a bandwidth; write it like 10GB/s, 800MiB/s, 1gbit or 100mbit",
                                option, text));
}

double parse_duration(const std::string& text, const std::string& option) {
  double v = 0;
  std::string u;
  if (split_number(text, v, u)) {
    const std::pair<const char*, double> units[] = {{"", 1}, {"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}};
    for (const auto& [name, scale] : units)
      if (u == name) return v * scale;
  }
  throw ConfigError(fmt::format("{} '{}' is not a duration; write it like 0.2ms, 50us or 1e-5", option, text));
}

}  // namespace tensorpar
