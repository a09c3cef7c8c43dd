#include "tensorpar/train/pipeline.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tensorpar/core/profile.hpp"

namespace tensorpar {

namespace {
// activations travel down the pipeline under one tag, their gradients up under another
constexpr int kActivationTag = 0, kGradientTag = 1;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// w.wait(), adding the time blocked to `seconds`
void timed_wait(Work& w, double& seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  w.wait();
  seconds += seconds_since(t0);
}
}  // namespace

PipelineStage::PipelineStage(ProcessGroup& pp, TransformerLM& model, PipelineSchedule schedule, int micro_batches)
    : pp_(pp),
      model_(model),
      micro_batches_(micro_batches),
      ops_(pipeline_ops(schedule, pp.size(), pp.rank(), micro_batches)),
      slots_(max_in_flight(ops_) + 1),
      B_(model.batch()),
      T_(model.seq()),
      NC_(model.stage_tokens(model.batch(), model.seq()) * model.config().hidden) {
  TP_CHECK(model.first_stage() == (pp.rank() == 0) && model.last_stage() == (pp.rank() == pp.size() - 1), ConfigError,
           "pipeline stage {} of {} holds layers [{}, {}) of {}", pp.rank(), pp.size(), model.first_layer(),
           model.first_layer() + model.stage_layers(), model.config().layers);
  x_.resize(size_t(micro_batches * B_ * T_));
  y_.resize(x_.size());
  const bool first = pp.rank() == 0, last = pp.rank() == pp.size() - 1;
  // inputs are kept until the micro-batch's backward; gradients in only until it starts
  if (!first) inputs_.assign(size_t(slots_), std::vector<float>(size_t(NC_)));
  if (!last) outputs_.assign(size_t(slots_), std::vector<float>(size_t(NC_)));
  if (!last) grads_in_.assign(2, std::vector<float>(size_t(NC_)));
  if (!first) grads_out_.assign(size_t(slots_), std::vector<float>(size_t(NC_)));
  output_sends_.resize(outputs_.size());
  grad_sends_.resize(grads_out_.size());
}

double PipelineStage::step(const BatchSource& next_batch, const TransformerLM::GradsReady& on_grads_ready) {
  const int s = pp_.rank(), P = pp_.size(), M = micro_batches_;
  const bool first = s == 0, last = s == P - 1;
  const int64_t BT = B_ * T_;
  const auto start = std::chrono::steady_clock::now();
  wait_seconds_ = 0;
  for (int k = 0; k < M; ++k) next_batch(x_.data() + k * BT, y_.data() + k * BT);

  Work activation_recv, gradient_recv;  // the one receive of each kind posted ahead
  const auto post_activation = [&](int k) {
    if (!first && k < M)
      activation_recv = pp_.recv(std::span<float>(inputs_[size_t(k % slots_)]), s - 1, kActivationTag);
  };
  const auto post_gradient = [&](int k) {
    if (!last && k < M) gradient_recv = pp_.recv(std::span<float>(grads_in_[size_t(k % 2)]), s + 1, kGradientTag);
  };
  post_activation(0);
  post_gradient(0);

  double loss = 0;
  int held = -1;  // the micro-batch whose activations the model's buffers hold
  int in_flight = 0;
  measured_in_flight_ = 0;
  recomputed_ = 0;
  const auto forward = [&](int k) {
    const float* input = first ? nullptr : inputs_[size_t(k % slots_)].data();
    const float l = model_.forward_stage(input, x_.data() + k * BT, y_.data() + k * BT, B_, T_);
    held = k;
    return l;
  };
  for (const PipelineOp& op : ops_) {
    const int k = op.micro;
    if (op.kind == PipelineOp::Forward) {
      if (!first) {
        TP_PROFILE_SCOPE("pipeline recv activation");
        timed_wait(activation_recv, wait_seconds_);
        post_activation(k + 1);  // its slot is free: the ring holds every micro-batch in flight + 1
      }
      const float l = forward(k);
      if (last) loss += double(l) / double(M);
      measured_in_flight_ = std::max(measured_in_flight_, ++in_flight);
      if (!last) {
        Work& previous = output_sends_[size_t(k % slots_)];
        timed_wait(previous, wait_seconds_);  // micro-batch k - slots' message, long received
        std::vector<float>& out = outputs_[size_t(k % slots_)];
        const std::span<const float> y = model_.stage_output();
        std::copy(y.begin(), y.end(), out.begin());
        previous = pp_.send(std::span<const float>(out), s + 1, kActivationTag);
      }
    } else {
      if (!last) {
        TP_PROFILE_SCOPE("pipeline recv gradient");
        timed_wait(gradient_recv, wait_seconds_);
        post_gradient(k + 1);  // into k - 1's buffer, consumed by its backward
      }
      const float* grad_output = last ? nullptr : grads_in_[size_t(k % 2)].data();
      if (held != k) {  // another micro-batch's forward ran since: recompute this one's activations
        forward(k);
        ++recomputed_;
      }
      model_.backward_stage(grad_output, x_.data() + k * BT, y_.data() + k * BT, B_, T_, 1.0f / float(M),
                            k == M - 1 ? on_grads_ready : TransformerLM::GradsReady{});
      held = -1;  // backward may reuse the activation buffers
      --in_flight;
      if (!first) {
        Work& previous = grad_sends_[size_t(k % slots_)];
        timed_wait(previous, wait_seconds_);
        std::vector<float>& out = grads_out_[size_t(k % slots_)];
        const std::span<const float> g = model_.stage_input_grad();
        std::copy(g.begin(), g.end(), out.begin());
        previous = pp_.send(std::span<const float>(out), s - 1, kGradientTag);
      }
    }
  }
  for (Work& w : output_sends_) timed_wait(w, wait_seconds_);
  for (Work& w : grad_sends_) timed_wait(w, wait_seconds_);
  step_seconds_ = seconds_since(start);
  pp_.broadcast(std::span<double>(&loss, 1), P - 1);  // the loss is known on the last stage only
  return loss;
}

float PipelineStage::forward_loss(const int32_t* tokens, const int32_t* targets) {
  const int s = pp_.rank(), P = pp_.size();
  const bool first = s == 0, last = s == P - 1;
  float* input = first ? nullptr : inputs_[0].data();
  if (!first) pp_.recv(std::span<float>(input, size_t(NC_)), s - 1, kActivationTag).wait();
  double loss = model_.forward_stage(input, tokens, targets, B_, T_);
  if (!last) {
    const std::span<const float> y = model_.stage_output();
    std::copy(y.begin(), y.end(), outputs_[0].begin());
    pp_.send(std::span<const float>(outputs_[0]), s + 1, kActivationTag).wait();
  }
  pp_.broadcast(std::span<double>(&loss, 1), P - 1);
  return float(loss);
}

void PipelineStage::sum_tied_embedding_grad(ProcessGroup& embedding) {
  const ModelConfig& c = model_.config();
  if (embedding.size() == 1 || !c.tie_embeddings) return;  // untied (Llama): the head is the last stage's own
  Parameter& table = model_.parameter(c.family == ModelFamily::Gpt2 ? "wte.weight" : "model.embed_tokens.weight");
  // exact f32, like every parameter gradient
  embedding.all_reduce(table.grad.span());
}

const Parameter* PipelineStage::counted_elsewhere() const {
  if (!model_.last_stage() || model_.first_stage() || !model_.config().tie_embeddings) return nullptr;
  for (const Parameter* p : model_.parameters())
    if (p->name == "wte.weight" || p->name == "model.embed_tokens.weight") return p;
  return nullptr;
}

}  // namespace tensorpar
