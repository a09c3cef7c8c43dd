#include "tensorpar/model/memory.hpp"

namespace tensorpar {

double activation_bytes_per_layer_formula(const MemoryShape& m) {
  const ModelConfig& c = m.model;
  const double N = double(m.batch * m.seq), t = m.tp, L = double(c.layers);
  const double h = double(c.hidden), a = double(c.heads), k = double(c.kv_heads_or_heads()), hd = h / a;
  const double f = double(c.ffn_or_default());
  const bool sp = m.options.sequence_parallel && m.tp > 1, bf16 = m.options.precision == Precision::BF16;
  const double r = sp ? t : 1;                                      // rows outside the TP regions: N / r
  const double norm_stats = c.family == ModelFamily::Gpt2 ? 2 : 1;  // LayerNorm mean + rstd; RMSNorm rstd
  const double gate = c.family == ModelFamily::Gpt2 ? 1 : 2;        // SwiGLU's fc output is [gate | up]
  // f32: block input, norm1 out, mid, norm2 out; two norms' statistics
  const double replicated = 4 * N / r * (4 * h + 2 * norm_stats);
  // f32: q k v, attention output, lse; fc output, activation
  const double attention = 4 * N / t * (h + 2 * k * hd + h + a);
  const double mlp = 4 * N / t * (gate * f + f);
  // bf16 GEMM input copies: the column-parallel inputs (norm outputs; sequence parallel gathers
  // them again instead) and the row-parallel inputs (attention output, activation)
  const double copies = bf16 ? (sp ? 0 : 2 * N * 2 * h) + 2 * N / t * (h + f) : 0;
  const double none = replicated + attention + mlp + copies;
  switch (m.options.recompute) {
    case Recompute::None:
      return none;
    case Recompute::Attention: {  // the output (and its bf16 copy) once for all layers
      const double output = N / t * (4 * h + (bf16 ? 2 * h : 0));
      return none - output + output / L;
    }
    case Recompute::Full: {  // each block's input, and one set of everything else for all blocks
      const double input = 4 * N / r * h;
      return input + (none - input) / L;
    }
  }
  return none;
}

double korthikanti_activation_bytes_per_layer(const MemoryShape& m, double e) {
  const ModelConfig& c = m.model;
  const double s = double(m.seq), b = double(m.batch), h = double(c.hidden), a = double(c.heads), t = m.tp;
  const bool sp = m.options.sequence_parallel && m.tp > 1;
  // the paper's 16-bit counts split into elements (e bytes) and dropout masks (1 byte):
  // 34 = 16 elements x 2 + 2 masks; 5as/h = (softmax + dropout output) 2 elements + 1 mask
  const double scores = a * s / h * (2 * e + 1) / t;
  switch (m.options.recompute) {
    case Recompute::Full:
      return s * b * h * e / (sp ? t : 1);
    case Recompute::Attention:
    case Recompute::None: {
      const double rest = sp ? (16 * e + 2) / t : 4 * e + 2 + 12 * e / t;
      return s * b * h * (rest + (m.options.recompute == Recompute::None ? scores : 0));
    }
  }
  return 0;
}

int64_t parameter_bytes_per_rank(const std::vector<Parameter*>& parameters) {
  int64_t elements = 0;
  for (const Parameter* p : parameters) elements += p->value.numel();
  return 16 * elements;
}

double parameter_bytes_expected(const std::vector<Parameter*>& parameters, int tp) {
  double elements = 0;
  for (const Parameter* p : parameters)
    elements += p->replicated() ? double(p->value.numel()) : double(shape_numel(p->global_shape)) / tp;
  return 16 * elements;
}

}  // namespace tensorpar
