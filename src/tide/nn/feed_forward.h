// diffusers' FeedForward with the GEGLU activation (models/attention.py, models/activations.py), the MLP of
// every BasicTransformerBlock in SD 1.x, 2.x and XL: `net.0.proj` (Linear to 2·inner), GELU-gated, `net.2`.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>  // Identity
#include "tide/nn/layers.h"

namespace tide::nn {

// GEGLU: proj(x) split in halves (h, gate) -> h · gelu(gate) (exact erf GELU).
class GegluImpl : public torch::nn::Module {
 public:
  GegluImpl(int64_t dim_in, int64_t dim_out);
  at::Tensor forward(const at::Tensor& x);  // [B, L, dim_in] -> [B, L, dim_out]

  Linear proj{nullptr};
};
TORCH_MODULE(Geglu);

class FeedForwardImpl : public torch::nn::Module {
 public:
  // inner = 4·dim (diffusers' mult=4), output dim = dim.
  explicit FeedForwardImpl(int64_t dim, int64_t mult = 4);
  at::Tensor forward(const at::Tensor& x);  // [B, L, dim] -> [B, L, dim]
  at::Tensor gate(const at::Tensor& x) { return geglu_->forward(x); }            // [B, L, dim] -> [B, L, inner]
  at::Tensor project_out(const at::Tensor& x) { return out_->forward(x); }      // [B, L, inner] -> [B, L, dim]

  // [0] GEGLU, [1] dropout (identity at inference, no parameters), [2] Linear(inner, dim)
  torch::nn::ModuleList net{nullptr};

 private:
  Geglu geglu_{nullptr};
  Linear out_{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace tide::nn
