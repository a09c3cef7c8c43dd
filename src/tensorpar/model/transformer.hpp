// TransformerLM: a decoder-only language model (GPT-2 or Llama family) with every layer split over
// the tensor-parallel group. The model owns its parameters, gradients and the activations its
// backward needs, all allocated once at construction for a given (batch, seq).
//
// Per block and step the communication is exactly: attention 1 all-reduce forward + 1 backward,
// MLP 1 + 1; plus the vocab-parallel embedding (1 forward) and loss (2 small forward, 1 backward).
//
// Inference with a KV cache (forward_cached): the same blocks over only the new positions, each
// attention reading and extending its layer of the caller's cache (infer::KvCache), then the
// vocab-sharded logits of the last new position gathered whole (1 all-gather).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/config.hpp"
#include "tensorpar/model/norm.hpp"
#include "tensorpar/parallel/parallel_attention.hpp"
#include "tensorpar/parallel/parallel_lm_head.hpp"
#include "tensorpar/parallel/parallel_mlp.hpp"
#include "tensorpar/parallel/vocab_parallel_embedding.hpp"

namespace tensorpar {

// Activation recomputation (Korthikanti et al. 2022): what backward computes again instead of
// keeping it from forward. Results are bit-identical in every mode (no dropout, deterministic kernels).
enum class Recompute {
  None,       // keep everything backward needs, per block
  Attention,  // selective: the attention output is recomputed from the kept q, k, v and log-sum-exp
  Full        // keep each block's input only; rerun the block's forward right before its backward
};
Recompute parse_recompute(const std::string& name);  // "none" | "attention" | "full"; ConfigError otherwise
const char* recompute_name(Recompute r);

// How the model computes (not what it computes).
struct TransformerOptions {
  Precision precision = Precision::F32;  // of the GEMMs: bf16 operands with f32 accumulation
  // Split the tokens outside the tensor-parallel regions over the group (Korthikanti et al.):
  // reduce-scatter + all-gather instead of each all-reduce; norm activations shrink by t.
  bool sequence_parallel = false;
  // Full recomputation also reruns, per block but the last, the attention's all-reduce (sequence
  // parallel: its all-gather + reduce-scatter, and the MLP's all-gather) in the backward.
  Recompute recompute = Recompute::None;
  // Wire format of the activation all-reduces / reduce-scatters / all-gathers over the TP group
  // (--tp-comm-dtype; comm/compressed_collectives.hpp). The model sets it on its group at
  // construction. Loss statistics, logits and parameter gradients always travel in f32.
  CommDtype tp_comm_dtype = CommDtype::F32;
  // Inference only (generate, eval, serve): parameters get no gradients (no arena) and no random
  // values (a checkpoint fills them), nothing is kept for backward (every block uses the first
  // block's activation buffers, no gradient scratch); backward() refuses.
  bool inference = false;
  // With inference: int8/int4 keep the block linears and an untied LM head only as their quantized
  // copy, which the checkpoint loader installs tensor by tensor (install_quantized); no f32 copy of
  // them is ever allocated. F32: f32 weights (quantize_weights can still quantize them later).
  WeightFormat weights = WeightFormat::F32;
};

// A pipeline stage's share of the model (train/pipeline.hpp): layers [first, first + count) of
// config.layers (count -1: all of them, the whole model). The stage starting at layer 0 holds the
// embeddings; the one ending at the last layer the final norm and the LM head; with tied embeddings
// that one holds the embedding table too, kept equal to the first stage's by the trainer (Megatron's
// embedding group). A stage has only its own parameters, gradients and activations; its parameters
// keep their global names and initial values (initialisation is keyed by name), so a stage's weights
// are exactly the whole model's.
struct LayerRange {
  int64_t first = 0, count = -1;
};

class TransformerLM {
 public:
  // Collective: every rank of `tp` constructs the model with the same arguments.
  TransformerLM(ProcessGroup& tp, const ModelConfig& config, int64_t batch, int64_t seq, uint64_t seed,
                const TransformerOptions& options = {}, LayerRange layers = {});
  ~TransformerLM();
  // What the constructor checks first, before any allocation: ConfigError if the configuration is
  // invalid for tp ranks, batch x seq (x hidden, x vocab) overflows, or the parameters, activations
  // and logits one rank would hold exceed this machine's physical memory (with the bytes needed).
  static void check_size(const ModelConfig& config, int tp, int64_t batch, int64_t seq,
                         const TransformerOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const TransformerOptions& options() const { return options_; }
  ProcessGroup& tp() { return tp_; }
  int64_t batch() const { return batch_; }
  int64_t seq() const { return seq_; }

  // Mean next-token loss over B*T positions: tokens, targets (B, T). Keeps activations for backward.
  float forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T);
  // Accumulates the gradients of loss_scale * (mean loss) into every parameter's grad. Collective:
  // besides the layers' own, with sequence parallelism it ends with one all-reduce of the norm and
  // position gradients (each rank saw only its tokens).
  // on_grads_ready(n), if given, is called as backward goes with a growing n: the first n elements of
  // grad_arena() hold their final gradients for this backward (data-parallel buckets start their
  // all-reduce from it while the rest of the backward runs); the last call has n = grad_arena().size().
  using GradsReady = std::function<void(int64_t)>;
  void backward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T, float loss_scale = 1.0f,
                const GradsReady& on_grads_ready = {});
  // Pipeline stages: the same passes over this stage's layers only. forward_stage takes `input`
  // (stage_tokens(B, T), hidden), the residual stream entering the stage's first layer (ignored on
  // the first stage, which embeds `tokens`), and returns the mean loss on the last stage (0 elsewhere,
  // where stage_output() then holds the residual stream leaving its last layer). backward_stage takes
  // the gradient wrt stage_output() (ignored on the last stage, which starts from the loss) and leaves
  // the gradient wrt the stage's input in stage_input_grad(). On a whole model they are forward and
  // backward.
  float forward_stage(const float* input, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T);
  void backward_stage(const float* grad_output, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                      float loss_scale = 1.0f, const GradsReady& on_grads_ready = {});
  std::span<const float> stage_output() const;      // (stage_tokens, hidden)
  std::span<const float> stage_input_grad() const;  // (stage_tokens, hidden)
  // Rows of the residual stream this rank holds for B x T tokens: B*T, or its 1/t with sequence parallelism.
  int64_t stage_tokens(int64_t B, int64_t T) const { return local_tokens(B * T); }
  // Inference on a pipeline: forward_cached on a stage receives the hidden state from the previous
  // stage of `pp` (the first embeds), passes its own on (the last computes the logits), and every
  // stage ends with the last stage's logits (one broadcast over pp). Each stage's KV cache holds its
  // own layers (KvCache sizes by stage_layers()). Collective over pp and tp from then on.
  void set_pipeline(ProcessGroup* pp) { pp_ = pp; }
  bool first_stage() const { return first_layer_ == 0; }
  bool last_stage() const { return first_layer_ + int64_t(blocks_.size()) == config_.layers; }
  int64_t first_layer() const { return first_layer_; }
  int64_t stage_layers() const { return int64_t(blocks_.size()); }

  // Logits over the real vocabulary at the last position of each row: out (B, vocab_size), whole on every rank.
  void last_logits(float* out, const int32_t* tokens, int64_t B, int64_t T);
  // Inference: tokens (B, n_new) at positions past_len .. past_len+n_new-1 of each row, whose earlier
  // positions' keys/values are in `cache` (one slice per layer); their keys/values are appended.
  // out (B, vocab_size), whole on every rank: logits at the last new position. B * n_new must fit the
  // (batch, seq) the model was built for; longer prompts are fed in chunks.
  void forward_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, int64_t past_len,
                      std::span<const KvCacheSlice> cache);
  // Continuous batching: row b is at its own position rows.past[b] in its own cache row rows.slot[b]
  // (CacheRows); each row's logits equal those of that row run alone as a batch of one.
  void forward_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, const CacheRows& rows,
                      std::span<const KvCacheSlice> cache);
  // This rank's share of the key/value heads (1 when a KV head is replicated on several ranks), for
  // sizing a KV cache.
  int64_t kv_heads_per_partition() const;

  // Inference with quantized weights (kernels/quantized_matmul.hpp): every rank quantizes its slice
  // of the block linears (QKV, attention output, MLP up/gate/down) and of an untied LM head, and
  // frees their f32 values; a tied head (GPT-2) stays f32, being the embedding table. Every
  // parameter's gradient is freed.
  // Call after loading the weights; the model can then no longer train or be saved. F32: no-op.
  void quantize_weights(WeightFormat format);
  WeightFormat weight_format() const { return weight_format_; }
  // Inference with TransformerOptions::weights: p (a block linear's weight or the untied head, whose
  // value is not allocated) gets `q`, this rank's slice quantized (ShapeError if it does not fit).
  void install_quantized(const Parameter& p, QuantizedWeight q);

  // Memory accounting of this rank: bytes of parameter values (f32 plus quantized copies) and of
  // gradients (the arena, or gradients a parameter owns). An inference model has gradient_bytes() 0.
  int64_t weight_bytes() const;
  int64_t gradient_bytes() const;

  void zero_grad();
  // Every parameter's grad is a view into this one 64-byte aligned buffer (as llm.c keeps them), each
  // starting on a 64-byte boundary (zero padding between), ordered as backward finalises them:
  // untied LM head, final norm, last block .. first block, embedding, positions. One buffer lets
  // data parallelism reduce gradients in a few large buckets filled front to back during backward.
  std::span<float> grad_arena() { return grad_arena_.span(); }
  // The parameters in arena order, and where each one's gradient starts in the arena.
  const std::vector<Parameter*>& grad_order() const { return grad_order_; }
  int64_t grad_offset(const Parameter& p) const;
  // Every parameter once, in a fixed order: embeddings, blocks, final norm (, untied LM head).
  const std::vector<Parameter*>& parameters() const { return parameters_; }
  Parameter& parameter(const std::string& name);
  // Per-token losses of the last forward (B*T).
  std::span<const float> losses() const { return {losses_.f32(), size_t(last_tokens_)}; }

  // Memory accounting (docs/memory.md): bytes of the activations this rank holds from forward to
  // backward, counting each buffer once however many layers share it (bf16 copies included;
  // gradient scratch, weights and the transient sequence-parallel workspace not).
  // Per layer: the blocks' buffers and the residual stream entering each block, over the layer count
  // (rounded down); total: that times the layers plus the final norm, its input and the LM head's.
  int64_t activation_bytes_per_layer() const;
  int64_t activation_bytes() const;

 private:
  struct Block;
  void embed(const int32_t* tokens, int64_t B, int64_t T);
  void run_blocks(int64_t B, int64_t T);
  // out (B, vocab_size) = logits at the last of the T positions of each row of final_out_.
  void gather_last_logits(float* out, int64_t B, int64_t T);
  // forward_cached at one position for all rows (rows == nullptr) or per row
  void run_cached(float* out, const int32_t* tokens, int64_t B, int64_t n_new, int64_t past_len,
                  const CacheRows* rows, std::span<const KvCacheSlice> cache);

  ProcessGroup& tp_;
  ModelConfig config_;
  TransformerOptions options_;
  int64_t batch_ = 0, seq_ = 0, last_tokens_ = 0;
  int64_t first_layer_ = 0;  // of this pipeline stage (0 for a whole model)
  ProcessGroup* pp_ = nullptr;  // the stages, for inference on a pipeline (set_pipeline)
  void check_whole_model(const char* what) const;
  // declared before the layers that use it: they are built with a pointer to it
  std::unique_ptr<SequenceParallelWorkspace> sp_workspace_;
  VocabParallelEmbedding embedding_;
  Parameter position_;  // GPT-2 wpe, replicated (max_seq, hidden)
  std::vector<std::unique_ptr<Block>> blocks_;
  Norm final_norm_;
  Parameter lm_head_weight_;  // untied Llama head (V_padded / t, hidden); empty when tied
  std::unique_ptr<ParallelLmHead> lm_head_;
  std::vector<Parameter*> parameters_;
  Tensor grad_arena_;
  std::vector<Parameter*> grad_order_;
  int64_t ready_after_final_norm_ = 0;       // arena prefix final once the final norm's backward ran
  std::vector<int64_t> ready_after_block_;   // ... once block l's backward ran
  void build_grad_arena();
  WeightFormat weight_format_ = WeightFormat::F32;

  Tensor residuals_;   // (layers + 1, B*T, hidden): the residual stream entering each block, and the output
  Tensor final_out_;   // (B*T, hidden)
  Tensor losses_;      // (B*T)
  Tensor grad_;        // (B*T, hidden): gradient of the residual stream, updated in place block by block
  Tensor grad_norm_;   // (B*T, hidden): gradient at a norm's output
  Tensor logits_scratch_, gather_scratch_;  // last_logits

  // sequence parallelism
  bool sequence_parallel() const { return sp_workspace_ != nullptr; }
  int64_t local_tokens(int64_t N) const;  // tokens of N this rank holds outside the TP regions
  // Norms and positions saw only this rank's tokens: their gradients from this backward are summed
  // over the group. What earlier backwards accumulated (gradient accumulation, pipeline micro-batches)
  // is set aside first and added back after, so it is not summed again.
  void set_aside_partial_gradients();
  void sum_partial_gradients();
  std::vector<Parameter*> partial_grad_parameters_;
  Tensor partial_grad_buffer_;  // all of their gradients packed, for one all-reduce
  Tensor partial_grad_earlier_;  // what earlier backwards accumulated in them
};

}  // namespace tensorpar
