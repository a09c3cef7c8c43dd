#include "tensorpar/parallel/column_parallel_linear.hpp"

#include "tensorpar/kernels/elementwise.hpp"
#include "tensorpar/kernels/gemm.hpp"
#include "tensorpar/parallel/mappings.hpp"

namespace tensorpar {

ColumnParallelLinear::ColumnParallelLinear(ProcessGroup& tp, const ColumnParallelOptions& options,
                                           int64_t max_tokens)
    : tp_(tp), options_(options), max_tokens_(max_tokens) {
  if (options_.segments.empty()) options_.segments = {options_.out_features};
  weight = make_sharded(options_.name + ".weight", {options_.out_features, options_.in_features}, 0,
                        options_.segments, tp.rank(), tp.size(), /*weight_decay=*/true, options_.segment_parts);
  out_per_partition_ = weight.value.dim(0);
  init_normal(weight, options_.seed, options_.init_std);
  if (options_.bias)
    bias = make_sharded(options_.name + ".bias", {options_.out_features}, 0, options_.segments, tp.rank(), tp.size(),
                        /*weight_decay=*/false, options_.segment_parts);  // zero-initialised
  if (options_.gather_output && tp.size() > 1) {
    gather_scratch_ = Tensor({tp.size(), max_tokens, out_per_partition_});
    local_out_ = Tensor({max_tokens, out_per_partition_});
  }
}

void ColumnParallelLinear::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (options_.bias) out.push_back(&bias);
}

void ColumnParallelLinear::forward(float* out, const float* inp, int64_t N) {
  TP_CHECK(N <= max_tokens_, ShapeError, "{}: {} tokens exceed the {} this layer was sized for", options_.name, N,
           max_tokens_);
  const int64_t in = options_.in_features, out_pp = out_per_partition_;
  const bool gather = options_.gather_output && tp_.size() > 1;
  float* y = gather ? local_out_.f32() : out;
  // Y_i (N, out_pp) = X (N, in) · A_i^T, A_i (out_pp, in)
  gemm(Trans::No, Trans::Yes, N, out_pp, in, 1.0f, inp, in, weight.value.f32(), in, 0.0f, y, out_pp);
  if (options_.bias) add_bias(y, bias.value.f32(), N, out_pp);
  if (gather) gather_from_tp_forward(tp_, out, y, N, out_pp, gather_scratch_.f32());
}

void ColumnParallelLinear::backward(float* dinp, const float* dout, const float* inp, int64_t N) {
  const int64_t in = options_.in_features, out_pp = out_per_partition_;
  // With gather_output the backward of the gather keeps this rank's columns: read them in place.
  const bool gather = options_.gather_output && tp_.size() > 1;
  const float* dy = gather ? dout + int64_t(tp_.rank()) * out_pp : dout;
  const int64_t ld_dy = gather ? out_pp * tp_.size() : out_pp;
  // partial dX (N, in) = dY_i (N, out_pp) · A_i (out_pp, in); summed over the group (f backward)
  gemm(Trans::No, Trans::No, N, in, out_pp, 1.0f, dy, ld_dy, weight.value.f32(), in, 0.0f, dinp, in);
  Work reduce = copy_to_tp_backward_async(tp_, std::span<float>(dinp, size_t(N * in)));
  // while it travels: dA_i (out_pp, in) += dY_i^T (out_pp, N) · X (N, in)
  gemm(Trans::Yes, Trans::No, out_pp, in, N, 1.0f, dy, ld_dy, inp, in, 1.0f, weight.grad.f32(), in);
  if (options_.bias) {
    if (ld_dy == out_pp) {
      bias_backward(bias.grad.f32(), dy, N, out_pp);
    } else {
      float* db = bias.grad.f32();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t j = 0; j < out_pp; ++j) db[j] += dy[n * ld_dy + j];
    }
  }
  reduce.wait();
}

}  // namespace tensorpar
