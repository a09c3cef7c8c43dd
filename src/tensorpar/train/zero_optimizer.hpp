// ZeroOptimizer: AdamW with its state sharded over the data-parallel group (ZeRO stage 1, as
// DeepSpeed and Megatron-LM's distributed optimizer do it), `train --zero 1`.
//
// The model's gradient arena (TransformerLM::grad_arena) is cut into the same buckets as
// GradBuckets (train/grad_buckets.hpp); each bucket [b, e) is split into D contiguous pieces,
// rank r owning [b + (e-b)r/D, b + (e-b)(r+1)/D) — uneven when D does not divide the bucket. Per step:
//   backward  each bucket is reduce-scattered (non-blocking, in place) as soon as it is final, so it
//             overlaps the rest of the backward as the all-reduce buckets do (at most
//             kMaxInFlight at once); finish_gradients() waits, moves each summed piece to its own
//             offset and divides it by D;
//   clip      the global norm from the pieces: squares (each element / the ranks of the TP group
//             holding it, as global_grad_norm weights replicated parameters) summed over DP, then TP;
//   step      AdamW on this rank's pieces of the weights with the moments of those pieces only
//             (2 x 4 bytes per owned element: optimizer memory ÷ D), then each bucket's updated
//             weights are written into the arena (whose gradients are spent) and all-gathered in
//             place, and copied from there into every parameter. The arena then holds weights, not
//             gradients, until zero_grad() — the trainer clears it at the start of every step.
// Every element's update is the plain AdamW's arithmetic on the same averaged gradient, so the
// result equals data parallelism with a replicated optimizer up to the order of the reduction sums
// (bit-identical at D=2, where a sum of two is commutative).
// Collective over dp (and tp for the norm): every rank builds it from the same model and calls the
// same methods in the same order.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/io/hf_checkpoint.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/adamw.hpp"

namespace tensorpar {

// Whole AdamW moments of this TP rank's parameters laid out like the gradient arena: what a
// checkpoint saves and loads (optimizer.safetensors stays the layout of the replicated optimizer).
struct ArenaMoments {
  Tensor exp_avg, exp_avg_sq;  // (grad_arena().size())
  // For save_checkpoint / load_checkpoint: ".exp_avg" / ".exp_avg_sq" of model.parameters()[i].
  std::vector<io::ParameterTensors> tensors(const TransformerLM& model);
};

class ZeroOptimizer {
 public:
  // bucket_bytes: the buckets' size as --dp-bucket-mb gives it; <= 0: one bucket, the whole arena.
  ZeroOptimizer(ProcessGroup& dp, ProcessGroup& tp, TransformerLM& model, const AdamWConfig& config,
                int64_t bucket_bytes);

  // Backward's GradsReady hook: the first n elements of the arena are final; start their buckets.
  void ready(int64_t n);
  // After backward: start what is left, wait for every bucket; this rank's pieces then hold the
  // gradients averaged over DP.
  void finish_gradients();
  // torch.nn.utils.clip_grad_norm_ on the pieces (max_norm <= 0: only measure); the norm before clipping.
  double clip_grad_norm(double max_norm);
  // One AdamW update of this rank's pieces, then every rank's weights all-gathered into the parameters.
  void step(float lr);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t steps) { step_ = steps; }
  // Bytes of AdamW state this rank holds (m and v of its pieces).
  int64_t optimizer_bytes() const { return int64_t(m_.nbytes() + v_.nbytes()); }
  size_t bucket_count() const { return buckets_.size(); }
  // This rank's gradient of its first owned parameter element (testing: a NaN injected here reaches the norm).
  std::span<float> first_local_gradient();

  // Checkpoints. Collective over dp: every rank receives the whole moments.
  ArenaMoments gather_moments();
  // Keeps this rank's pieces of moments read whole from a checkpoint (arena layout).
  void load_moments(const ArenaMoments& moments);
  // Empty whole moments for a checkpoint to load into.
  ArenaMoments empty_moments() const;

 private:
  // A run of one parameter's elements inside this rank's piece of a bucket.
  struct Segment {
    Parameter* parameter;
    int64_t param_offset, arena_offset, shard_offset, length;
  };
  // Elements whose squares count 1/replicas in the norm.
  struct NormRun {
    int64_t arena_offset, length;
    int replicas;
  };
  struct Bucket {
    int64_t begin = 0, end = 0;       // arena elements
    std::vector<int> counts;          // piece length of every DP rank
    int64_t piece_begin = 0, piece_length = 0, shard_offset = 0;  // this rank's piece; its place in m_, v_
    std::vector<Parameter*> parameters;  // whose gradients lie in this bucket
    std::vector<Segment> segments;       // this rank's part of them
    Work work;
  };
  // Waits for (non-blocking) or runs (deferred) bucket b's reduce-scatter, moves the summed piece
  // to its offset and averages it.
  void finish_reduce_scatter(Bucket& b);
  // Non-blocking collectives in flight at once: Open MPI keeps a temporary of about the message for
  // each until it completes, so with every bucket in flight the peak held one more copy of the
  // gradients (measured, docs/scaling.md); two keep the overlap of one bucket with the next.
  static constexpr size_t kMaxInFlight = 2;

  ProcessGroup& dp_;
  ProcessGroup& tp_;
  TransformerLM& model_;
  AdamWConfig config_;
  std::span<float> arena_;
  std::vector<Bucket> buckets_;
  std::vector<NormRun> norm_runs_;
  Tensor m_, v_;  // (sum of this rank's piece lengths)
  size_t started_ = 0, finished_ = 0;  // reduce-scatters started / finished in this backward
  int64_t step_ = 0;
};

}  // namespace tensorpar
