#include "tensorpar/model/transformer.hpp"

#include <cmath>
#include <cstring>

#include "tensorpar/core/checked_size.hpp"
#include "tensorpar/core/profile.hpp"
#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/model/memory.hpp"

namespace tensorpar {

namespace {

struct Names {
  std::string embedding, norm1, qkv, attn_proj, norm2, fc, mlp_proj, final_norm;
};

Names names(ModelFamily family, int64_t layer) {
  if (family == ModelFamily::Gpt2) {
    const std::string h = fmt::format("h.{}.", layer);
    return {"wte", h + "ln_1", h + "attn.c_attn", h + "attn.c_proj", h + "ln_2", h + "mlp.c_fc", h + "mlp.c_proj",
            "ln_f"};
  }
  const std::string l = fmt::format("model.layers.{}.", layer);
  return {"model.embed_tokens",     l + "input_layernorm",  l + "self_attn.qkv_proj", l + "self_attn.o_proj",
          l + "post_attention_layernorm", l + "mlp.gate_up_proj", l + "mlp.down_proj", "model.norm"};
}

}  // namespace

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::None;
  if (name == "attention") return Recompute::Attention;
  if (name == "full") return Recompute::Full;
  throw ConfigError(fmt::format("unknown recomputation '{}'; use none, attention or full", name));
}

const char* recompute_name(Recompute r) {
  return r == Recompute::None ? "none" : r == Recompute::Attention ? "attention" : "full";
}

struct TransformerLM::Block {
  Norm norm1;
  ParallelAttention attention;
  Norm norm2;
  ParallelMLP mlp;
  Tensor norm1_out, mid, norm2_out;  // (B*T, hidden): mid = residual after attention

  static AttentionOptions attention_options(const ModelConfig& c, const TransformerOptions& t, const Names& n,
                                            uint64_t seed, float proj_std, SequenceParallelWorkspace* workspace) {
    AttentionOptions o;
    o.precision = t.precision;
    o.workspace = t.sequence_parallel ? workspace : nullptr;
    o.sequence_parallel = t.sequence_parallel;
    o.qkv_name = n.qkv;
    o.proj_name = n.attn_proj;
    o.hidden = c.hidden;
    o.n_heads = c.heads;
    o.n_kv_heads = c.kv_heads_or_heads();
    o.bias = c.has_bias();
    o.rope = c.family == ModelFamily::Llama;
    o.rope_theta = c.rope_theta;
    o.max_positions = c.max_seq;
    o.seed = seed;
    o.proj_init_std = proj_std;
    o.recompute_output = t.recompute == Recompute::Attention;
    o.alloc = weight_alloc(t);
    return o;
  }
  static MlpOptions mlp_options(const ModelConfig& c, const TransformerOptions& t, const Names& n, uint64_t seed,
                                float proj_std, SequenceParallelWorkspace* workspace) {
    MlpOptions o;
    o.precision = t.precision;
    o.workspace = t.sequence_parallel ? workspace : nullptr;
    o.sequence_parallel = t.sequence_parallel;
    o.fc_name = n.fc;
    o.proj_name = n.mlp_proj;
    o.hidden = c.hidden;
    o.ffn_hidden = c.ffn_or_default();
    o.activation = c.family == ModelFamily::Gpt2 ? MlpActivation::Gelu : MlpActivation::SwiGLU;
    o.bias = c.has_bias();
    o.seed = seed;
    o.proj_init_std = proj_std;
    o.alloc = weight_alloc(t);
    return o;
  }
  // of the block linears' weights
  static ParameterAlloc weight_alloc(const TransformerOptions& t) {
    if (!t.inference) return ParameterAlloc::Training;
    return t.weights == WeightFormat::F32 ? ParameterAlloc::Inference : ParameterAlloc::Deferred;
  }
  static ParameterAlloc norm_alloc(const TransformerOptions& t) {
    return t.inference ? ParameterAlloc::Inference : ParameterAlloc::Training;
  }

  // local_tokens: B*T, or B*T/t with sequence parallelism (the rows of x, out and the norms).
  // first: the first block, whose activation buffers this one shares when recomputing (t.recompute):
  // the attention output only (Attention), or every buffer (Full). Inference shares every buffer
  // too: nothing is kept from one block to the next but the residual stream.
  Block(ProcessGroup& tp, const ModelConfig& c, const TransformerOptions& t, int64_t layer, int64_t B, int64_t T,
        int64_t local_tokens, uint64_t seed, SequenceParallelWorkspace* workspace, const Block* first)
      : Block(tp, c, t, names(c.family, layer), B, T, local_tokens, seed,
              0.02f / std::sqrt(2.0f * float(c.layers)), workspace,  // GPT-2's scaled residual projections
              t.recompute == Recompute::None && !t.inference ? nullptr : first,
              t.recompute == Recompute::Full || t.inference ? first : nullptr) {
    // with recomputation the scratch is shared already, with the activations
    if (first && t.recompute == Recompute::None && !t.inference) {
      attention.share_gradient_scratch(first->attention);
      mlp.share_gradient_scratch(first->mlp);
    }
  }
  Block(ProcessGroup& tp, const ModelConfig& c, const TransformerOptions& t, const Names& n, int64_t B, int64_t T,
        int64_t local_tokens, uint64_t seed, float proj_std, SequenceParallelWorkspace* workspace,
        const Block* share_attention, const Block* share_all)
      : norm1(c.family == ModelFamily::Gpt2 ? NormKind::LayerNorm : NormKind::RMSNorm, n.norm1, c.hidden, c.norm_eps,
              tp.size(), local_tokens, share_all ? &share_all->norm1 : nullptr, norm_alloc(t)),
        attention(tp, attention_options(c, t, n, seed, proj_std, workspace), B, T,
                  share_attention ? &share_attention->attention : nullptr),
        norm2(c.family == ModelFamily::Gpt2 ? NormKind::LayerNorm : NormKind::RMSNorm, n.norm2, c.hidden, c.norm_eps,
              tp.size(), local_tokens, share_all ? &share_all->norm2 : nullptr, norm_alloc(t)),
        mlp(tp, mlp_options(c, t, n, seed, proj_std, workspace), B * T, share_all ? &share_all->mlp : nullptr),
        norm1_out(share_all ? share_all->norm1_out.view() : Tensor({local_tokens, c.hidden})),
        mid(share_all ? share_all->mid.view() : Tensor({local_tokens, c.hidden})),
        norm2_out(share_all ? share_all->norm2_out.view() : Tensor({local_tokens, c.hidden})) {}

  // out = x + attn(norm1(x)) + mlp(norm2(...)); x and out hold Nl rows (all tokens, or this rank's)
  void forward(float* out, const float* x, int64_t B, int64_t T, int64_t Nl) {
    const int64_t N = Nl, C = norm1_out.dim(1);
    {
      TP_PROFILE_SCOPE("block.norm+residual forward");
      norm1.forward(norm1_out.f32(), x, N);
    }
    {
      TP_PROFILE_SCOPE("attention forward");
      attention.forward(mid.f32(), norm1_out.f32(), B, T);
    }
    {
      TP_PROFILE_SCOPE("block.norm+residual forward");
      add_inplace(mid.f32(), x, N * C);
      norm2.forward(norm2_out.f32(), mid.f32(), N);
    }
    {
      TP_PROFILE_SCOPE("mlp forward");
      mlp.forward(out, norm2_out.f32(), B * T);
    }
    TP_PROFILE_SCOPE("block.norm+residual forward");
    add_inplace(out, mid.f32(), N * C);
  }
  // Full recomputation: forward again from the kept input x, up to what backward needs (no MLP
  // output projection), into the buffers every block shares. Bit-identical to the first forward.
  void recompute(const float* x, int64_t B, int64_t T, int64_t Nl) {
    TP_PROFILE_SCOPE("block recompute");
    const int64_t N = Nl, C = norm1_out.dim(1);
    norm1.forward(norm1_out.f32(), x, N);
    attention.forward(mid.f32(), norm1_out.f32(), B, T);
    add_inplace(mid.f32(), x, N * C);
    norm2.forward(norm2_out.f32(), mid.f32(), N);
    mlp.recompute(norm2_out.f32(), B * T);
  }
  int64_t activation_bytes() const {
    int64_t bytes = norm1.activation_bytes() + attention.activation_bytes() + norm2.activation_bytes() +
                    mlp.activation_bytes();
    for (const Tensor* t : {&norm1_out, &mid, &norm2_out})
      if (t->owns_data()) bytes += int64_t(t->nbytes());
    return bytes;
  }
  // grad (N, C): gradient wrt this block's output on entry, wrt its input on return.
  void backward(float* grad, float* grad_norm, const float* x, int64_t B, int64_t T, int64_t Nl) {
    const int64_t N = Nl;
    {
      TP_PROFILE_SCOPE("mlp backward");
      mlp.backward(grad_norm, grad, norm2_out.f32(), B * T);
    }
    {
      TP_PROFILE_SCOPE("block.norm backward");
      norm2.backward(grad, grad_norm, mid.f32(), N);  // grad += : now wrt mid (residual path kept)
    }
    {
      TP_PROFILE_SCOPE("attention backward");
      attention.backward(grad_norm, grad, norm1_out.f32(), B, T);
    }
    TP_PROFILE_SCOPE("block.norm backward");
    norm1.backward(grad, grad_norm, x, N);  // grad += : now wrt x
  }
  void collect_norm_parameters(std::vector<Parameter*>& out) {
    norm1.collect_parameters(out);
    norm2.collect_parameters(out);
  }
  // forward over n_new new positions per row, attention against the layer's KV cache
  // (rows: per-row cache row and position; null: all rows at past_len in cache rows 0..B-1)
  void forward_cached(float* out, const float* x, int64_t B, int64_t n_new, int64_t past_len, const CacheRows* rows,
                      const KvCacheSlice& cache) {
    const int64_t N = B * n_new, C = norm1_out.dim(1);
    norm1.forward(norm1_out.f32(), x, N);
    if (rows)
      attention.forward_cached(mid.f32(), norm1_out.f32(), B, n_new, *rows, cache);
    else
      attention.forward_cached(mid.f32(), norm1_out.f32(), B, n_new, past_len, cache);
    add_inplace(mid.f32(), x, N * C);
    norm2.forward(norm2_out.f32(), mid.f32(), N);
    mlp.forward(out, norm2_out.f32(), N);
    add_inplace(out, mid.f32(), N * C);
  }
  void collect_parameters(std::vector<Parameter*>& out) {
    norm1.collect_parameters(out);
    attention.collect_parameters(out);
    norm2.collect_parameters(out);
    mlp.collect_parameters(out);
  }
};

// Checked before the first buffer is allocated, so a huge --vocab or batch x seq is one clear error instead of
// a wrapped size, an allocation that the OOM killer ends, or a segfault.
void TransformerLM::check_size(const ModelConfig& c, int tp, int64_t batch, int64_t seq,
                               const TransformerOptions& options) {
  c.validate(tp);
  TP_CHECK(batch >= 1, ConfigError, "batch size must be at least 1 (got {})", batch);
  TP_CHECK(seq >= 1 && seq <= c.max_seq, ConfigError,
           "sequence length {} must be between 1 and the model's maximum of {} positions", seq, c.max_seq);
  const int64_t N = checked_mul(batch, seq, "batch x sequence");
  checked_mul(N, std::max(c.hidden, c.ffn_or_default()), "batch x sequence x hidden");
  checked_mul(N, c.vocab_size, "batch x sequence x vocab");
  // values and gradients of this rank's parameters, activations, and the logits of its vocabulary shard
  const MemoryShape shape{c, batch, seq, tp, options};
  // (inference: values only, the activation formula of training is an upper bound)
  const double bytes = (options.inference ? 4.0 : 8.0) * double(c.parameter_count()) / tp +
                       activation_bytes_per_layer_formula(shape) * double(c.layers) +
                       4.0 * double(N) * double(c.vocab_size) / tp;
  check_fits_in_memory(bytes >= 9e18 ? INT64_MAX : int64_t(bytes),
                       fmt::format("a model of {} parameters with batch {} x sequence {} (per rank, TP={})",
                                   c.parameter_count(), batch, seq, tp),
                       "use a smaller model, --batch or --seq, or more tensor-parallel ranks");
}

namespace {
// The layers a stage holds, checked; the whole model for the default range.
LayerRange checked_range(const ModelConfig& c, LayerRange r) {
  if (r.count < 0) return {0, c.layers};
  TP_CHECK(r.first >= 0 && r.count >= 1 && r.first + r.count <= c.layers, ConfigError,
           "a pipeline stage of layers [{}, {}) does not fit the model's {} layers", r.first, r.first + r.count,
           c.layers);
  return r;
}
// What one stage holds, for the memory check: its layers (embeddings and head counted as for the whole model).
ModelConfig stage_config(const ModelConfig& c, LayerRange r) {
  ModelConfig s = c;
  s.layers = checked_range(c, r).count;
  return s;
}
}  // namespace

TransformerLM::TransformerLM(ProcessGroup& tp, const ModelConfig& config, int64_t batch, int64_t seq, uint64_t seed,
                             const TransformerOptions& options, LayerRange layers)
    : tp_(tp),
      config_((check_size(stage_config(config, layers), tp.size(), batch, seq, options), config)),
      options_(options),
      batch_(batch),
      seq_(seq),
      first_layer_(checked_range(config, layers).first),
      sp_workspace_(options.sequence_parallel && tp.size() > 1
                        ? std::make_unique<SequenceParallelWorkspace>(batch * seq, config.hidden, options.precision)
                        : nullptr),
      embedding_(tp, {names(config.family, 0).embedding, config.vocab_size, config.hidden, seed, 0.02f,
                      sp_workspace_.get(), Block::norm_alloc(options)}),
      final_norm_(config.family == ModelFamily::Gpt2 ? NormKind::LayerNorm : NormKind::RMSNorm,
                  names(config.family, 0).final_norm, config.hidden, config.norm_eps, tp.size(),
                  local_tokens(batch * seq), nullptr, Block::norm_alloc(options)) {
  TP_CHECK(seq >= 1 && seq <= config.max_seq, ConfigError,
           "sequence length {} must be between 1 and the model's maximum of {} positions", seq, config.max_seq);
  TP_CHECK(batch >= 1, ConfigError, "batch size must be at least 1 (got {})", batch);
  tp_.set_comm_dtype(options.tp_comm_dtype);  // every layer's activation collectives read it from the group
  const int64_t N = batch * seq, C = config.hidden, Nl = local_tokens(N);
  const LayerRange range = checked_range(config, layers);
  const bool first = range.first == 0, last = range.first + range.count == config.layers;
  if (first || (last && config.tie_embeddings)) {
    parameters_.push_back(&embedding_.weight);
  } else {  // a stage without the table: no memory for it
    embedding_.weight.value = Tensor();
    embedding_.weight.grad = Tensor();
  }
  if (config.family == ModelFamily::Gpt2 && first) {
    position_ = make_replicated("wpe.weight", {config.max_seq, C}, tp.size(), true, Block::norm_alloc(options));
    if (!options.inference) init_normal(position_, seed, 0.02f);
    parameters_.push_back(&position_);
  }
  for (int64_t l = range.first; l < range.first + range.count; ++l) {
    blocks_.push_back(std::make_unique<Block>(tp, config, options, l, batch, seq, Nl, seed, sp_workspace_.get(),
                                              blocks_.empty() ? nullptr : blocks_.front().get()));
    blocks_.back()->collect_parameters(parameters_);
  }
  if (last) {
    final_norm_.collect_parameters(parameters_);
    const VocabShard shard{embedding_.vocab_start(), embedding_.vocab_end() - embedding_.vocab_start(),
                           config.vocab_size};
    Parameter* head = &embedding_.weight;
    if (!config.tie_embeddings) {
      VocabParallelEmbedding untied(tp, {"lm_head", config.vocab_size, C, seed, 0.02f, nullptr,
                                         Block::weight_alloc(options)});
      lm_head_weight_ = std::move(untied.weight);
      head = &lm_head_weight_;
      parameters_.push_back(head);
    }
    lm_head_ = std::make_unique<ParallelLmHead>(tp, *head, shard, N, options.precision, sp_workspace_.get(),
                                                options.inference);
  }
  residuals_ = Tensor({range.count + 1, Nl, C});
  final_out_ = Tensor({Nl, C});
  losses_ = Tensor({N});
  if (options.inference) {
    if (Block::weight_alloc(options) == ParameterAlloc::Deferred) {  // refused before anything is loaded
      for (auto& b : blocks_)
        for (const auto* linear : {&b->attention.qkv, &b->mlp.fc}) linear->check_quantizable(options.weights);
      for (auto& b : blocks_)
        for (const auto* linear : {&b->attention.proj, &b->mlp.proj}) linear->check_quantizable(options.weights);
      weight_format_ = options.weights;
    }
    return;  // no gradients, no backward buffers
  }
  grad_ = Tensor({Nl, C});
  grad_norm_ = Tensor({Nl, C});
  if (sequence_parallel()) {
    // replicated parameters applied to this rank's tokens only: their gradients are partial sums
    for (auto& block : blocks_) block->collect_norm_parameters(partial_grad_parameters_);
    if (last) final_norm_.collect_parameters(partial_grad_parameters_);
    if (config.family == ModelFamily::Gpt2 && first) partial_grad_parameters_.push_back(&position_);
    int64_t total = 0;
    for (const Parameter* p : partial_grad_parameters_) total += p->grad.numel();
    partial_grad_buffer_ = Tensor({total});
    partial_grad_earlier_ = Tensor({total});
  }
  build_grad_arena();
}

void TransformerLM::build_grad_arena() {
  constexpr int64_t kAlign = int64_t(Tensor::kAlignment / sizeof(float));
  auto round_up = [](int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
  std::vector<int64_t> ends;  // arena end after each group below
  auto add = [&](const std::vector<Parameter*>& group) {
    for (Parameter* p : group) grad_order_.push_back(p);
  };
  const size_t layers = blocks_.size();
  // backward order: untied head, final norm, blocks last to first, then embedding and positions
  std::vector<std::vector<Parameter*>> groups;
  std::vector<Parameter*> first;
  if (!lm_head_weight_.value.empty()) first.push_back(&lm_head_weight_);
  if (last_stage()) final_norm_.collect_parameters(first);
  groups.push_back(first);
  for (size_t l = layers; l-- > 0;) {
    std::vector<Parameter*> block;
    blocks_[l]->collect_parameters(block);
    groups.push_back(block);
  }
  std::vector<Parameter*> last;
  if (!embedding_.weight.value.empty()) last.push_back(&embedding_.weight);
  if (config_.family == ModelFamily::Gpt2 && first_stage()) last.push_back(&position_);
  groups.push_back(last);
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const auto& group : groups) {
    add(group);
    for (const Parameter* p : group) {
      offsets.push_back(total);
      total += round_up(p->grad.numel());
    }
    ends.push_back(total);
  }
  TP_CHECK_EQ(grad_order_.size(), parameters_.size(), "parameters in the gradient arena");
  grad_arena_ = Tensor({total});
  for (size_t i = 0; i < grad_order_.size(); ++i) {
    Parameter* p = grad_order_[i];
    p->grad = grad_arena_.view_range(offsets[i], p->value.shape());
  }
  ready_after_final_norm_ = ends[0];
  ready_after_block_.assign(layers, 0);
  for (size_t l = 0; l < layers; ++l) ready_after_block_[l] = ends[1 + (layers - 1 - l)];
}

int64_t TransformerLM::grad_offset(const Parameter& p) const {
  return int64_t(p.grad.f32() - grad_arena_.f32());
}

int64_t TransformerLM::local_tokens(int64_t N) const {
  return sp_workspace_ ? tokens_per_rank(tp_, N) : N;
}

void TransformerLM::set_aside_partial_gradients() {
  float* earlier = partial_grad_earlier_.f32();
  int64_t offset = 0;
  for (Parameter* p : partial_grad_parameters_) {
    std::memcpy(earlier + offset, p->grad.f32(), p->grad.nbytes());
    p->grad.zero();
    offset += p->grad.numel();
  }
}

void TransformerLM::sum_partial_gradients() {
  // pack, one all-reduce over the group, unpack (sequence parallelism only)
  float* buffer = partial_grad_buffer_.f32();
  int64_t offset = 0;
  for (const Parameter* p : partial_grad_parameters_) {
    std::memcpy(buffer + offset, p->grad.f32(), p->grad.nbytes());
    offset += p->grad.numel();
  }
  tp_.all_reduce(partial_grad_buffer_.span());  // parameter gradients: exact f32 whatever --tp-comm-dtype says
  add_inplace(buffer, partial_grad_earlier_.f32(), partial_grad_buffer_.numel());
  offset = 0;
  for (Parameter* p : partial_grad_parameters_) {
    std::memcpy(p->grad.f32(), buffer + offset, p->grad.nbytes());
    offset += p->grad.numel();
  }
}

TransformerLM::~TransformerLM() = default;

Parameter& TransformerLM::parameter(const std::string& name) {
  for (Parameter* p : parameters_)
    if (p->name == name) return *p;
  throw Error(fmt::format("model has no parameter named '{}'", name));
}

void TransformerLM::quantize_weights(WeightFormat format) {
  if (format == WeightFormat::F32) return;
  TP_CHECK(weight_format_ == WeightFormat::F32, ConfigError, "the model's weights are already quantized");
  for (auto& b : blocks_) {  // each rank its own slices; no communication
    b->attention.qkv.quantize(format);
    b->attention.proj.quantize(format);
    b->mlp.fc.quantize(format);
    b->mlp.proj.quantize(format);
  }
  const bool untied = !config_.tie_embeddings;
  if (untied) lm_head_->quantize(format, /*free_f32=*/true);
  // the model cannot train any more: the gradients of what stays f32 (embeddings, norms, a tied
  // head) go too -- the embedding's alone is as large as its table
  for (Parameter* p : parameters_) p->grad = Tensor();  // views into the arena
  grad_arena_ = Tensor();
  weight_format_ = format;
}

void TransformerLM::install_quantized(const Parameter& p, QuantizedWeight q) {
  TP_CHECK(q.format == weight_format_ && !q.empty(), ConfigError, "{}: a {} weight for a {} model", p.name,
           weight_format_name(q.format), weight_format_name(weight_format_));
  for (auto& b : blocks_) {
    if (&p == &b->attention.qkv.weight) return b->attention.qkv.install_quantized(std::move(q));
    if (&p == &b->attention.proj.weight) return b->attention.proj.install_quantized(std::move(q));
    if (&p == &b->mlp.fc.weight) return b->mlp.fc.install_quantized(std::move(q));
    if (&p == &b->mlp.proj.weight) return b->mlp.proj.install_quantized(std::move(q));
  }
  TP_CHECK(&p == &lm_head_weight_ && !config_.tie_embeddings, ConfigError,
           "{} is not a quantized weight of the model", p.name);
  lm_head_->install_quantized(std::move(q));
}

int64_t TransformerLM::weight_bytes() const {
  int64_t bytes = 0;
  for (const Parameter* p : parameters_) bytes += p->value.owns_data() ? int64_t(p->value.nbytes()) : 0;
  for (const auto& b : blocks_)
    bytes += b->attention.qkv.quantized_weight().bytes() + b->attention.proj.quantized_weight().bytes() +
             b->mlp.fc.quantized_weight().bytes() + b->mlp.proj.quantized_weight().bytes();
  return bytes + lm_head_->quantized_bytes();
}

int64_t TransformerLM::gradient_bytes() const {
  int64_t bytes = int64_t(grad_arena_.nbytes());
  for (const Parameter* p : parameters_) bytes += p->grad.owns_data() ? int64_t(p->grad.nbytes()) : 0;
  return bytes;
}

void TransformerLM::zero_grad() { grad_arena_.zero(); }

void TransformerLM::embed(const int32_t* tokens, int64_t B, int64_t T) {
  const int64_t C = config_.hidden, N = B * T, Nl = local_tokens(N);
  float* x0 = residuals_.f32();
  embedding_.forward(x0, tokens, N);
  if (config_.family != ModelFamily::Gpt2) return;
  // this rank's tokens are [first, first + Nl) of the batch; token n sits at position n % T
  const int64_t first = Nl == N ? 0 : tp_.rank() * Nl;
  for (int64_t i = 0; i < Nl; ++i) add_inplace(x0 + i * C, position_.value.f32() + (first + i) % T * C, C);
}

void TransformerLM::run_blocks(int64_t B, int64_t T) {
  const int64_t Nl = local_tokens(B * T), NC = Nl * config_.hidden;
  for (size_t l = 0; l < blocks_.size(); ++l)
    blocks_[l]->forward(residuals_.f32() + (l + 1) * NC, residuals_.f32() + l * NC, B, T, Nl);
  if (last_stage()) final_norm_.forward(final_out_.f32(), residuals_.f32() + blocks_.size() * NC, Nl);
}

float TransformerLM::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T) {
  return forward_stage(nullptr, tokens, targets, B, T);
}

void TransformerLM::backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, float loss_scale,
                             const GradsReady& on_grads_ready) {
  backward_stage(nullptr, tokens, targets, B, T, loss_scale, on_grads_ready);
}

std::span<const float> TransformerLM::stage_output() const {
  const int64_t NC = local_tokens(last_tokens_) * config_.hidden;
  return {residuals_.f32() + int64_t(blocks_.size()) * NC, size_t(NC)};
}

std::span<const float> TransformerLM::stage_input_grad() const {
  return {grad_.f32(), size_t(local_tokens(last_tokens_) * config_.hidden)};
}

void TransformerLM::check_whole_model(const char* what) const {
  TP_CHECK(first_stage() && last_stage(), ConfigError,
           "{} runs on a whole model, not on a pipeline stage of layers [{}, {})", what, first_layer_,
           first_layer_ + int64_t(blocks_.size()));
}

float TransformerLM::forward_stage(const float* input, const int32_t* tokens, const int32_t* targets, int64_t B,
                                   int64_t T) {
  TP_CHECK(B <= batch_ && T <= seq_ && B * T <= batch_ * seq_, ShapeError,
           "batch {} x sequence {} exceeds the {} x {} the model was built for", B, T, batch_, seq_);
  // residual stream rows of a smaller batch are packed with stride T, so the buffers stay valid
  if (first_stage()) {
    TP_PROFILE_SCOPE("embedding forward");
    embed(tokens, B, T);
  } else {
    TP_CHECK(input != nullptr, ShapeError, "stage of layers [{}, {}) needs its input activations", first_layer_,
             first_layer_ + int64_t(blocks_.size()));
    std::memcpy(residuals_.f32(), input, size_t(local_tokens(B * T) * config_.hidden) * sizeof(float));
  }
  run_blocks(B, T);
  last_tokens_ = B * T;
  if (!last_stage()) return 0;
  TP_PROFILE_SCOPE("lm head+loss forward");
  return lm_head_->forward(losses_.f32(), final_out_.f32(), targets, B * T);
}

void TransformerLM::backward_stage(const float* grad_output, const int32_t* tokens, const int32_t* targets, int64_t B,
                                   int64_t T, float loss_scale, const GradsReady& on_grads_ready) {
  // with sequence parallelism the norm and position gradients are partial until the very end
  const bool early = on_grads_ready && !sequence_parallel();
  if (sequence_parallel()) set_aside_partial_gradients();
  TP_CHECK(weight_format_ == WeightFormat::F32, ConfigError,
           "the model's weights are quantized ({}) for inference; training needs f32 weights",
           weight_format_name(weight_format_));
  TP_CHECK(!options_.inference, ConfigError,
           "the model was built for inference (no gradients); build it without TransformerOptions::inference to train");
  const int64_t N = B * T, C = config_.hidden, Nl = local_tokens(N), NC = Nl * C;
  float* grad = grad_.f32();
  float* grad_norm = grad_norm_.f32();
  if (last_stage()) {
    {
      TP_PROFILE_SCOPE("lm head+loss backward");
      lm_head_->backward(grad_norm, final_out_.f32(), targets, N, loss_scale / float(N));
    }
    grad_.zero();
    final_norm_.backward(grad, grad_norm, residuals_.f32() + blocks_.size() * NC, Nl);
    if (early) on_grads_ready(ready_after_final_norm_);
  } else {
    TP_CHECK(grad_output != nullptr, ShapeError, "stage of layers [{}, {}) needs the gradient of its output",
             first_layer_, first_layer_ + int64_t(blocks_.size()));
    std::memcpy(grad, grad_output, size_t(NC) * sizeof(float));
  }
  for (size_t l = blocks_.size(); l-- > 0;) {
    // the shared buffers still hold the last block's activations from forward
    if (options_.recompute == Recompute::Full && l + 1 < blocks_.size())
      blocks_[l]->recompute(residuals_.f32() + l * NC, B, T, Nl);
    blocks_[l]->backward(grad, grad_norm, residuals_.f32() + l * NC, B, T, Nl);
    if (early) on_grads_ready(ready_after_block_[l]);
  }
  if (first_stage()) {
    TP_PROFILE_SCOPE("embedding backward");
    embedding_.backward(grad, tokens, N);
    if (config_.family == ModelFamily::Gpt2) {
      const int64_t first = Nl == N ? 0 : tp_.rank() * Nl;
      for (int64_t i = 0; i < Nl; ++i) add_inplace(position_.grad.f32() + (first + i) % T * C, grad + i * C, C);
    }
  }
  if (sequence_parallel()) sum_partial_gradients();
  if (on_grads_ready) on_grads_ready(int64_t(grad_arena_.numel()));
}

int64_t TransformerLM::activation_bytes_per_layer() const {
  // each block's input: its rows of residuals_ (the last row is the final norm's input)
  const int64_t L = int64_t(blocks_.size());
  int64_t bytes = L * (residuals_.dim(1) * residuals_.dim(2)) * int64_t(sizeof(float));
  for (const auto& block : blocks_) bytes += block->activation_bytes();
  return bytes / L;
}

int64_t TransformerLM::activation_bytes() const {
  int64_t blocks = int64_t(blocks_.size()) * (residuals_.dim(1) * residuals_.dim(2)) * int64_t(sizeof(float));
  for (const auto& block : blocks_) blocks += block->activation_bytes();
  const int64_t final_input = residuals_.dim(1) * residuals_.dim(2) * int64_t(sizeof(float));
  if (!lm_head_) return blocks;  // a pipeline stage before the last
  return blocks + final_input + int64_t(final_out_.nbytes()) + final_norm_.activation_bytes() +
         lm_head_->activation_bytes();
}

void TransformerLM::last_logits(float* out, const int32_t* tokens, int64_t B, int64_t T) {
  TP_CHECK(B <= batch_ && T <= seq_, ShapeError, "batch {} x sequence {} exceeds the {} x {} the model was built for",
           B, T, batch_, seq_);
  check_whole_model("last_logits");
  embed(tokens, B, T);
  run_blocks(B, T);
  gather_last_logits(out, B, T);
}

void TransformerLM::gather_last_logits(float* out, int64_t B, int64_t T) {
  const int64_t C = config_.hidden, V_local = lm_head_->shard().local_size, t = tp_.size();
  const float* final_out = final_out_.f32();
  if (sequence_parallel()) {  // every rank needs the last token of every row
    sequence_all_gather(tp_, sp_workspace_->gathered.f32(), final_out, B * T, C);
    final_out = sp_workspace_->gathered.f32();
  }
  if (logits_scratch_.numel() < B * V_local) {  // sized on first use, then reused
    logits_scratch_ = Tensor({batch_, V_local + C});
    gather_scratch_ = Tensor({t, batch_, V_local});
  }
  // the last position of each row, packed (B, C), then this rank's vocabulary columns (B, V_local)
  float* last = logits_scratch_.f32() + batch_ * V_local;
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(last + b * C, final_out + ((b + 1) * T - 1) * C, size_t(C) * sizeof(float));
  lm_head_->logits(logits_scratch_.f32(), last, B);
  // f32 whatever --tp-comm-dtype says: sampling and greedy decoding read these logits directly, and one
  // token's (B, V) is small beside the 2 x layers activation all-reduces of a step
  tp_.all_gather(std::span<float>(gather_scratch_.f32(), size_t(t * B * V_local)),
                 std::span<const float>(logits_scratch_.f32(), size_t(B * V_local)));
  const int64_t V = config_.vocab_size;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < t; ++r) {
      const int64_t first = r * V_local, count = std::min(V_local, V - first);
      if (count > 0)
        std::memcpy(out + b * V + first, gather_scratch_.f32() + (r * B + b) * V_local, size_t(count) * sizeof(float));
    }
}

int64_t TransformerLM::kv_heads_per_partition() const { return blocks_.at(0)->attention.kv_heads_per_partition(); }

void TransformerLM::forward_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, int64_t past_len,
                                   std::span<const KvCacheSlice> cache) {
  run_cached(out, tokens, B, n_new, past_len, nullptr, cache);
}

void TransformerLM::forward_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, const CacheRows& rows,
                                   std::span<const KvCacheSlice> cache) {
  run_cached(out, tokens, B, n_new, 0, &rows, cache);
}

void TransformerLM::run_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, int64_t past_len,
                               const CacheRows* rows, std::span<const KvCacheSlice> cache) {
  TP_CHECK(B >= 1 && B <= batch_ && n_new >= 1 && B * n_new <= batch_ * seq_, ShapeError,
           "batch {} x {} new positions exceed the {} x {} the model was built for; feed them in chunks", B, n_new,
           batch_, seq_);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t past = rows ? rows->past[b] : past_len;
    TP_CHECK(past >= 0 && past + n_new <= config_.max_seq, ShapeError,
             "positions up to {} exceed the model's maximum of {}", past + n_new, config_.max_seq);
  }
  if (!pp_) check_whole_model("KV-cache inference without set_pipeline");
  TP_CHECK(cache.size() == blocks_.size(), ShapeError, "the KV cache has {} layers but the model {}", cache.size(),
           blocks_.size());
  TP_CHECK(!sequence_parallel(), ConfigError,
           "KV-cache inference runs without sequence parallelism; build the model without it");
  const int64_t C = config_.hidden, NC = B * n_new * C;
  constexpr int kHiddenTag = 2;  // apart from training's activation and gradient messages
  float* x0 = residuals_.f32();
  if (first_stage()) {
    embedding_.forward(x0, tokens, B * n_new);
    if (config_.family == ModelFamily::Gpt2)
      for (int64_t b = 0; b < B; ++b)
        add_inplace(x0 + b * n_new * C, position_.value.f32() + (rows ? rows->past[b] : past_len) * C, n_new * C);
  } else {
    pp_->recv(std::span<float>(x0, size_t(NC)), pp_->rank() - 1, kHiddenTag).wait();
  }
  for (size_t l = 0; l < blocks_.size(); ++l)
    blocks_[l]->forward_cached(residuals_.f32() + (l + 1) * NC, residuals_.f32() + l * NC, B, n_new, past_len, rows,
                               cache[l]);
  if (!last_stage()) {
    pp_->send(std::span<const float>(residuals_.f32() + blocks_.size() * NC, size_t(NC)), pp_->rank() + 1, kHiddenTag)
        .wait();
  } else {
    final_norm_.forward(final_out_.f32(), residuals_.f32() + blocks_.size() * NC, B * n_new);
    gather_last_logits(out, B, n_new);
  }
  // every stage samples the same token from the same logits
  if (pp_ && pp_->size() > 1) pp_->broadcast(std::span<float>(out, size_t(B * config_.vocab_size)), pp_->size() - 1);
}

}  // namespace tensorpar
