// Pipeline parallelism, one stage's side: runs an optimizer step's micro-batches through this rank's
// stage of the model in the order a schedule (train/pipeline_schedule.hpp) gives, passing the residual
// stream forward and its gradient backward between neighbouring stages of the `pp` group.
//
// Messages: every receive is posted one micro-batch ahead (before the data is needed) and every send
// is non-blocking, waited only when its buffer is about to be reused or at the end of the step.
// With sequence parallelism the residual stream is already split over the tensor-parallel ranks, so
// each rank sends only its 1/t of the activation.
//
// Memory: a stage keeps the input of each micro-batch in flight (at most P - s under 1F1B, m under
// GPipe) and recomputes its forward from that input right before the backward when the model's
// activation buffers hold another micro-batch by then (always on the last stage under 1F1B: never).
// Recomputation is bit-identical (deterministic kernels), so results equal the single-process run.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "tensorpar/comm/process_group.hpp"
#include "tensorpar/model/transformer.hpp"
#include "tensorpar/train/pipeline_schedule.hpp"

namespace tensorpar {

class PipelineStage {
 public:
  // `model` is this rank's stage (pp.rank() of pp.size()), built for (B, T).
  PipelineStage(ProcessGroup& pp, TransformerLM& model, PipelineSchedule schedule, int micro_batches);

  // next_batch(tokens, targets) fills one micro-batch, (B, T) each (DataLoader::next).
  using BatchSource = std::function<void(int32_t*, int32_t*)>;
  // One step's forwards and backwards over `micro_batches` micro-batches read from `next_batch` (every
  // stage reads the same ones: the first needs the tokens, the last the targets). Gradients of
  // loss / micro_batches accumulate into the stage's parameters; the last micro-batch's backward
  // reports on_grads_ready. Returns the mean loss on every stage. Collective over pp.
  double step(const BatchSource& next_batch, const TransformerLM::GradsReady& on_grads_ready = {});
  // Forward only (validation): the loss of one batch, on every stage. Collective over pp.
  float forward_loss(const int32_t* tokens, const int32_t* targets);

  // Tied embeddings: sum the embedding table's gradient over `embedding` (first and last stage).
  // No-op when the group is one rank.
  void sum_tied_embedding_grad(ProcessGroup& embedding);
  // The parameter a global gradient norm must not count on this stage (the last stage's copy of a
  // tied embedding), or null.
  const Parameter* counted_elsewhere() const;

  // What the schedule allows and what the last step did: the most micro-batches whose forward had
  // run and whose backward had not on this stage (= stage inputs held at once).
  int scheduled_max_in_flight() const { return max_in_flight(ops_); }
  int measured_max_in_flight() const { return measured_in_flight_; }
  const std::vector<PipelineOp>& ops() const { return ops_; }
  // Forwards run a second time before their backward in the last step.
  int recomputed_forwards() const { return recomputed_; }
  // The last step's wall time, and the part of it spent blocked waiting for the neighbours' messages
  // (the pipeline bubble as this stage sees it; ideally (P - 1) / (m + P - 1) of the step).
  double step_seconds() const { return step_seconds_; }
  double wait_seconds() const { return wait_seconds_; }

 private:
  ProcessGroup& pp_;
  TransformerLM& model_;
  int micro_batches_;
  std::vector<PipelineOp> ops_;
  int slots_;  // activation buffers in a ring: in flight + 1 (the next one's receive is posted early)
  int64_t B_, T_, NC_;
  std::vector<int32_t> x_, y_;  // (micro_batches, B*T)
  std::vector<std::vector<float>> inputs_, outputs_, grads_in_, grads_out_;  // (slots | 2, NC)
  std::vector<Work> output_sends_, grad_sends_;
  int measured_in_flight_ = 0, recomputed_ = 0;
  double step_seconds_ = 0, wait_seconds_ = 0;
};

// The ideal bubble of a P-stage pipeline over m micro-batches with equal stages: (P - 1) / (m + P - 1).
inline double ideal_bubble_fraction(int stages, int micro_batches) {
  return double(stages - 1) / double(micro_batches + stages - 1);
}

}  // namespace tensorpar
