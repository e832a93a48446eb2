#include "tide/train/adamw.h"

#include <cmath>

#include "tide/runtime/error.h"

namespace tide::train {

AdamW::AdamW(AdamWConfig config, at::IntArrayRef shape)
    : config_(config),
      exp_avg_(at::zeros(shape, at::TensorOptions().dtype(at::kFloat))),
      exp_avg_sq_(at::zeros(shape, at::TensorOptions().dtype(at::kFloat))) {}

void AdamW::step(at::Tensor& param, const at::Tensor& grad, double lr) {
  const auto& c = config_;
  ++steps_;
  // torch.optim.adamw._single_tensor_adamw, in its order of operations.
  param.mul_(1.0 - lr * c.weight_decay);
  exp_avg_.lerp_(grad, 1.0 - c.beta1);
  exp_avg_sq_.mul_(c.beta2).addcmul_(grad, grad, 1.0 - c.beta2);
  const double bias_correction1 = 1.0 - std::pow(c.beta1, static_cast<double>(steps_));
  const double bias_correction2 = 1.0 - std::pow(c.beta2, static_cast<double>(steps_));
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  const at::Tensor denom = (exp_avg_sq_.sqrt() / bias_correction2_sqrt).add_(c.eps);
  param.addcdiv_(exp_avg_, denom, -step_size);
}

void AdamW::restore(int64_t steps, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq) {
  if (!exp_avg.sizes().equals(exp_avg_.sizes()) || !exp_avg_sq.sizes().equals(exp_avg_sq_.sizes()))
    throw Error("optimizer state has the wrong shape for these placeholder vectors");
  steps_ = steps;
  exp_avg_ = exp_avg.to(at::kFloat).clone();
  exp_avg_sq_ = exp_avg_sq.to(at::kFloat).clone();
}

}  // namespace tide::train
