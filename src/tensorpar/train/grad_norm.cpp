#include "tensorpar/train/grad_norm.hpp"

#include <cmath>

#include "tensorpar/kernels/elementwise.hpp"

namespace tensorpar {

double global_grad_norm(ProcessGroup& tp, const std::vector<Parameter*>& parameters) {
  double local = 0;
  for (const Parameter* p : parameters) local += p->grad_sum_of_squares_once();
  tp.all_reduce(std::span<double>(&local, 1));
  return std::sqrt(local);
}

double clip_grad_norm(ProcessGroup& tp, const std::vector<Parameter*>& parameters, double max_norm) {
  const double norm = global_grad_norm(tp, parameters);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (Parameter* p : parameters) scale_inplace(p->grad.f32(), float(coef), p->grad.numel());
  }
  return norm;
}

double clip_grad_norm(ProcessGroup& tp, ProcessGroup& pp, const std::vector<Parameter*>& parameters,
                      const Parameter* counted_elsewhere, double max_norm) {
  double local = 0;
  for (const Parameter* p : parameters)
    if (p != counted_elsewhere) local += p->grad_sum_of_squares_once();
  tp.all_reduce(std::span<double>(&local, 1));
  pp.all_reduce(std::span<double>(&local, 1));
  const double norm = std::sqrt(local);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (Parameter* p : parameters) scale_inplace(p->grad.f32(), float(coef), p->grad.numel());
  }
  return norm;
}

}  // namespace tensorpar
