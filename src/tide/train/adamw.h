// AdamW on one tensor (the placeholder vectors), with torch.optim.AdamW's single-tensor arithmetic
// (decoupled weight decay first, then the bias-corrected Adam step), defaults as diffusers' script.
// diffusers runs AdamW on the whole embedding table and restores every other row afterwards; Adam's state
// is per element, so this gives the same placeholder rows.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace tide::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double weight_decay = 1e-2;
  double eps = 1e-8;
};

class AdamW {
 public:
  AdamW(AdamWConfig config, at::IntArrayRef shape);
  // param -= ... in place (param must not require grad in this call's scope: run under NoGradGuard).
  void step(at::Tensor& param, const at::Tensor& grad, double lr);

  int64_t steps() const { return steps_; }
  const at::Tensor& exp_avg() const { return exp_avg_; }
  const at::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  // Resuming: the state saved by a checkpoint.
  void restore(int64_t steps, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq);

 private:
  AdamWConfig config_;
  at::Tensor exp_avg_, exp_avg_sq_;  // float32
  int64_t steps_ = 0;
};

}  // namespace tide::train
