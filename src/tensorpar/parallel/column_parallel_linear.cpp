#include "tensorpar/parallel/column_parallel_linear.hpp"

#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/parallel/mappings.hpp"

namespace tensorpar {

ColumnParallelLinear::ColumnParallelLinear(ProcessGroup& tp, const ColumnParallelOptions& options,
                                           int64_t max_tokens, const ColumnParallelLinear* share_with)
    : tp_(tp), options_(options), max_tokens_(max_tokens) {
  if (options_.segments.empty()) options_.segments = {options_.out_features};
  TP_CHECK(!(options_.sequence_parallel && options_.gather_output), ConfigError,
           "{}: gather_output and sequence parallelism do not combine", options_.name);
  weight = make_sharded(options_.name + ".weight", {options_.out_features, options_.in_features}, 0,
                        options_.segments, tp.rank(), tp.size(), /*weight_decay=*/true, options_.segment_parts,
                        options_.alloc);
  out_per_partition_ = weight.local_shape()[0];
  if (options_.alloc == ParameterAlloc::Training) init_normal(weight, options_.seed, options_.init_std);
  if (options_.bias)
    bias = make_sharded(options_.name + ".bias", {options_.out_features}, 0, options_.segments, tp.rank(), tp.size(),
                        /*weight_decay=*/false, options_.segment_parts,
                        options_.alloc == ParameterAlloc::Training ? ParameterAlloc::Training : ParameterAlloc::Inference);  // zero-initialised
  if (options_.precision == Precision::BF16 && options_.alloc != ParameterAlloc::Deferred) {
    if (!sequence_parallel())
      x_bf16_ = share_with ? share_with->x_bf16_.view() : Bf16Operand(max_tokens, options_.in_features);
    w_bf16_ = Bf16Weight(out_per_partition_, options_.in_features, max_tokens, options_.bias);
    dy_bf16_ = share_with ? share_with->dy_bf16_.view() : Bf16Operand(max_tokens, out_per_partition_);
  }
  if (options_.gather_output && tp.size() > 1) {
    gather_scratch_ = Tensor({tp.size(), max_tokens, out_per_partition_});
    local_out_ = Tensor({max_tokens, out_per_partition_});
  }
}

void ColumnParallelLinear::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (options_.bias) out.push_back(&bias);
}

const float* ColumnParallelLinear::whole_input(const float* inp, int64_t N) {
  if (!sequence_parallel()) return inp;
  float* full = options_.workspace->gathered.f32();
  sequence_all_gather(tp_, full, inp, N, options_.in_features);
  return full;
}

void ColumnParallelLinear::forward(float* out, const float* inp, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "{}: {} tokens exceed the {} this layer was sized for", options_.name, N,
           max_tokens_);
  const int64_t in = options_.in_features, out_pp = out_per_partition_;
  const bool gather = options_.gather_output && tp_.size() > 1;
  float* y = gather ? local_out_.f32() : out;
  const float* x = whole_input(inp, N);  // sequence parallel: all-gather the tokens
  // Y_i (N, out_pp) = X (N, in) · A_i^T, A_i (out_pp, in)
  bool bias_added = false;
  if (!qweight_.empty()) {
    quantized_matmul(y, x, in, qweight_, N);
  } else if (weight.value.empty()) {
    throw ConfigError(fmt::format("{}: the weight was never loaded", options_.name));
  } else if (options_.precision == Precision::BF16) {
    const bf16* xb = (sequence_parallel() ? options_.workspace->gathered_bf16 : x_bf16_).load(x, N, in, in);
    w_bf16_.load(weight.value.f32(), N);
    w_bf16_.forward(xb, N, y, options_.bias ? bias.value.f32() : nullptr);  // the bias inside the GEMM
    bias_added = true;
  } else {
    gemm(Trans::No, Trans::Yes, N, out_pp, in, 1.0f, x, in, weight.value.f32(), in, 0.0f, y, out_pp);
  }
  if (options_.bias && !bias_added) add_bias(y, bias.value.f32(), N, out_pp);
  if (gather) gather_from_tp_forward(tp_, out, y, N, out_pp, gather_scratch_.f32());
}

void ColumnParallelLinear::quantize(WeightFormat format) {
  if (format == WeightFormat::F32) return;
  TP_CHECK(qweight_.empty(), ConfigError, "{}: the weight is already quantized", options_.name);
  check_quantizable(format);
  qweight_ = quantize_weight(format, weight.value.f32(), out_per_partition_, options_.in_features);
  weight.value = Tensor();  // keep only the quantized copy: this is what makes the rank's memory drop
  weight.grad = Tensor();
  w_bf16_ = Bf16Weight();
}

void ColumnParallelLinear::check_quantizable(WeightFormat format) const {
  TP_CHECK(options_.in_features % kQuantBlock == 0, ShapeError,
           "{}: in_features={} is not a multiple of {}; --weights {} needs whole 32-weight blocks per row",
           options_.name, options_.in_features, kQuantBlock, weight_format_name(format));
}

void ColumnParallelLinear::install_quantized(QuantizedWeight q) {
  TP_CHECK(q.rows == out_per_partition_ && q.cols == options_.in_features, ShapeError,
           "{}: a quantized weight of {} x {} for a slice of {} x {}", options_.name, q.rows, q.cols,
           out_per_partition_, options_.in_features);
  qweight_ = std::move(q);
  weight.value = Tensor();
  weight.grad = Tensor();
  w_bf16_ = Bf16Weight();
}

void ColumnParallelLinear::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  TP_CHECK(qweight_.empty(), ConfigError, "{}: quantized weights are for inference; backward needs f32 weights",
           options_.name);
  const int64_t in = options_.in_features, out_pp = out_per_partition_;
  // With gather_output the backward of the gather keeps this rank's columns: read them in place.
  const bool gather = options_.gather_output && tp_.size() > 1;
  const float* dy = gather ? dout + int64_t(tp_.rank()) * out_pp : dout;
  const int64_t ld_dy = gather ? out_pp * tp_.size() : out_pp;
  if (options_.precision == Precision::BF16) {
    backward_bf16(dinp, dy_bf16_.load(dy, N, out_pp, ld_dy), inp, N);
  } else {
    // sequence parallel: gather the input tokens again (not kept since the forward), and collect the
    // partial dX of all tokens to reduce-scatter it back to this rank's tokens
    const float* x = whole_input(inp, N);
    float* dx = sequence_parallel() ? options_.workspace->partial.f32() : dinp;
    // partial dX (N, in) = dY_i (N, out_pp) · A_i (out_pp, in); summed over the group (f backward),
    // while it travels: dA_i (out_pp, in) += dY_i^T (out_pp, N) · X (N, in)
    Work reduce;
    gemm(Trans::No, Trans::No, N, in, out_pp, 1.0f, dy, ld_dy, weight.value.f32(), in, 0.0f, dx, in);
    if (!sequence_parallel()) reduce = copy_to_tp_backward_async(tp_, std::span<float>(dx, size_t(N * in)));
    gemm(Trans::Yes, Trans::No, out_pp, in, N, 1.0f, dy, ld_dy, x, in, 1.0f, weight.grad.f32(), in);
    if (sequence_parallel())
      sequence_reduce_scatter(tp_, dinp, dx, N, in);
    else
      reduce.wait();
  }
  if (options_.bias) {
    if (ld_dy == out_pp) {
      bias_backward(bias.grad.f32(), dy, N, out_pp);
    } else {
      float* db = bias.grad.f32();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < out_pp; ++j) db[j] += dy[n * ld_dy + j];
    }
  }
}

bf16* ColumnParallelLinear::output_grad_bf16() {
  TP_CHECK(options_.precision == Precision::BF16 && qweight_.empty() && !(options_.gather_output && tp_.size() > 1),
           ConfigError, "{}: a bf16 output-gradient buffer exists only in bf16 training without gather_output",
           options_.name);
  return dy_bf16_.data();
}

void ColumnParallelLinear::backward_kept_grad(float* dinp, const float* inp, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "{}: {} tokens exceed the {} this layer was sized for", options_.name, N,
           max_tokens_);
  backward_bf16(dinp, output_grad_bf16(), inp, N);
}

void ColumnParallelLinear::backward_bf16(float* dinp, const bf16* dyb, const float* inp, int64_t N) {
  const int64_t in = options_.in_features, out_pp = out_per_partition_;
  // as backward's f32 path: sequence parallel gathers the input again and reduce-scatters dX
  float* dx = sequence_parallel() ? options_.workspace->partial.f32() : dinp;
  const bf16* xb = sequence_parallel() ? options_.workspace->gathered_bf16.load(whole_input(inp, N), N, in, in)
                                       : x_bf16_.data();
  Work reduce;
  w_bf16_.backward_data(dyb, N, dx);
  if (!sequence_parallel()) reduce = copy_to_tp_backward_async(tp_, std::span<float>(dx, size_t(N * in)));
  weight_grad_bf16(out_pp, in, N, dyb, xb, weight.grad.f32());
  if (sequence_parallel())
    sequence_reduce_scatter(tp_, dinp, dx, N, in);
  else
    reduce.wait();
}

}  // namespace tensorpar
