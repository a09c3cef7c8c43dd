#include "tensorpar/parallel/row_parallel_linear.hpp"

#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/kernels/gemm_bf16.hpp"
#include "tensorpar/parallel/mappings.hpp"

namespace tensorpar {

RowParallelLinear::RowParallelLinear(ProcessGroup& tp, const RowParallelOptions& options, int64_t max_tokens,
                                     const RowParallelLinear* share_with)
    : tp_(tp), options_(options), max_tokens_(max_tokens) {
  weight = make_sharded(options_.name + ".weight", {options_.out_features, options_.in_features}, 1,
                        {options_.in_features}, tp.rank(), tp.size(), /*weight_decay=*/true, {}, options_.alloc);
  in_per_partition_ = weight.local_shape()[1];
  if (options_.alloc == ParameterAlloc::Training) init_normal(weight, options_.seed, options_.init_std);
  if (options_.bias)
    bias = make_replicated(options_.name + ".bias", {options_.out_features}, tp.size(), false,
                           options_.alloc == ParameterAlloc::Training ? ParameterAlloc::Training : ParameterAlloc::Inference);
  if (options_.precision == Precision::BF16 && options_.alloc != ParameterAlloc::Deferred) {
    x_bf16_ = share_with ? share_with->x_bf16_.view() : Bf16Operand(max_tokens, in_per_partition_);
    w_bf16_ = Bf16Weight(options_.out_features, in_per_partition_, max_tokens);
    dy_bf16_ = share_with ? share_with->dy_bf16_.view() : Bf16Operand(max_tokens, options_.out_features);
  }
  if (!options_.input_is_parallel && tp.size() > 1) {
    dinp_local_ = Tensor({max_tokens, in_per_partition_});
    gather_scratch_ = Tensor({tp.size(), max_tokens, in_per_partition_});
  }
}

void RowParallelLinear::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (options_.bias) out.push_back(&bias);
}

void RowParallelLinear::forward(float* out, const float* inp, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "{}: {} tokens exceed the {} this layer was sized for", options_.name, N,
           max_tokens_);
  const int64_t in_pp = in_per_partition_;
  // scatter_to_tp forward when the input is whole: read this rank's columns in place
  const bool split_input = !options_.input_is_parallel && tp_.size() > 1;
  const float* x = split_input ? inp + int64_t(tp_.rank()) * in_pp : inp;
  const int64_t ld_x = split_input ? options_.in_features : in_pp;
  const bool bf16 = options_.precision == Precision::BF16 && qweight_.empty();
  forward_gemm(out, x, ld_x, bf16 ? x_bf16_.load(x, N, in_pp, ld_x) : nullptr, N);
}

bf16* RowParallelLinear::kept_input_bf16() {
  TP_CHECK(options_.precision == Precision::BF16 && qweight_.empty() && (options_.input_is_parallel || tp_.size() == 1),
           ConfigError, "{}: a bf16 input copy exists only in bf16 training with a parallel input", options_.name);
  return x_bf16_.data();
}

void RowParallelLinear::forward_kept_input(float* out, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "{}: {} tokens exceed the {} this layer was sized for", options_.name, N,
           max_tokens_);
  forward_gemm(out, nullptr, 0, kept_input_bf16(), N);
}

void RowParallelLinear::forward_gemm(float* out, const float* x, int64_t ld_x, const bf16* xb, int64_t N) {
  const int64_t in_pp = in_per_partition_, out_f = options_.out_features;
  float* y = sequence_parallel() ? options_.workspace->partial.f32() : out;
  // partial Y (N, out) = X_i (N, in_pp) · A_i^T, A_i (out, in_pp)
  if (!qweight_.empty()) {
    quantized_matmul(y, x, ld_x, qweight_, N);
  } else if (weight.value.empty()) {
    throw ConfigError(fmt::format("{}: the weight was never loaded", options_.name));
  } else if (options_.precision == Precision::BF16) {
    w_bf16_.load(weight.value.f32(), N);
    w_bf16_.forward(xb, N, y);
  } else {
    gemm(Trans::No, Trans::Yes, N, out_f, in_pp, 1.0f, x, ld_x, weight.value.f32(), in_pp, 0.0f, y, out_f);
  }
  int64_t rows = N;
  if (sequence_parallel()) {  // leave the region: this rank's tokens of the sum
    sequence_reduce_scatter(tp_, out, y, N, out_f);
    rows = N / tp_.size();
  } else {
    reduce_from_tp_forward(tp_, std::span<float>(out, size_t(N * out_f)));
  }
  if (options_.bias) add_bias(out, bias.value.f32(), rows, out_f);  // once, after the reduction
}

void RowParallelLinear::quantize(WeightFormat format) {
  if (format == WeightFormat::F32) return;
  TP_CHECK(qweight_.empty(), ConfigError, "{}: the weight is already quantized", options_.name);
  check_quantizable(format);
  qweight_ = quantize_weight(format, weight.value.f32(), options_.out_features, in_per_partition_);
  weight.value = Tensor();  // keep only the quantized copy
  weight.grad = Tensor();
  w_bf16_ = Bf16Weight();
}

void RowParallelLinear::check_quantizable(WeightFormat format) const {
  TP_CHECK(in_per_partition_ % kQuantBlock == 0, ShapeError,
           "{}: {} input features per rank ({} over {} ranks) is not a multiple of {}; --weights {} needs whole "
           "32-weight blocks on each rank: use a tensor-parallel degree that splits it so",
           options_.name, in_per_partition_, options_.in_features, tp_.size(), kQuantBlock,
           weight_format_name(format));
}

void RowParallelLinear::install_quantized(QuantizedWeight q) {
  TP_CHECK(q.rows == options_.out_features && q.cols == in_per_partition_, ShapeError,
           "{}: a quantized weight of {} x {} for a slice of {} x {}", options_.name, q.rows, q.cols,
           options_.out_features, in_per_partition_);
  qweight_ = std::move(q);
  weight.value = Tensor();
  weight.grad = Tensor();
  w_bf16_ = Bf16Weight();
}

void RowParallelLinear::keep_input(const float* inp, int64_t N) {
  if (options_.precision != Precision::BF16) return;
  const int64_t in_pp = in_per_partition_;
  const bool split_input = !options_.input_is_parallel && tp_.size() > 1;
  x_bf16_.load(split_input ? inp + int64_t(tp_.rank()) * in_pp : inp, N, in_pp,
               split_input ? options_.in_features : in_pp);
}

void RowParallelLinear::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  TP_CHECK(qweight_.empty(), ConfigError, "{}: quantized weights are for inference; backward needs f32 weights",
           options_.name);
  const int64_t in_pp = in_per_partition_, out_f = options_.out_features;
  const bool split_input = !options_.input_is_parallel && tp_.size() > 1;
  const float* x = split_input ? inp + int64_t(tp_.rank()) * in_pp : inp;
  const int64_t ld_x = split_input ? options_.in_features : in_pp;
  float* dx = split_input ? dinp_local_.f32() : dinp;
  if (sequence_parallel()) {  // backward of the reduce-scatter: gather every token's gradient
    float* full = options_.workspace->gathered.f32();
    sequence_all_gather(tp_, full, dout, N, out_f);
    dout = full;
  }
  // dX_i (N, in_pp) = dY (N, out) · A_i (out, in_pp): no communication (g backward is the identity)
  // dA_i (out, in_pp) += dY^T (out, N) · X_i (N, in_pp)
  if (options_.precision == Precision::BF16) {
    const bf16* dyb = dy_bf16_.load(dout, N, out_f, out_f);
    w_bf16_.backward_data(dyb, N, dx);
    weight_grad_bf16(out_f, in_pp, N, dyb, x_bf16_.data(), weight.grad.f32());
  } else {
    gemm(Trans::No, Trans::No, N, in_pp, out_f, 1.0f, dout, out_f, weight.value.f32(), in_pp, 0.0f, dx, in_pp);
    gemm(Trans::Yes, Trans::No, out_f, in_pp, N, 1.0f, dout, out_f, x, ld_x, 1.0f, weight.grad.f32(), in_pp);
  }
  if (options_.bias) bias_backward(bias.grad.f32(), dout, N, out_f);
  if (split_input) gather_from_tp_forward(tp_, dinp, dx, N, in_pp, gather_scratch_.f32());
}

}  // namespace tensorpar
