#include "tide/nn/feed_forward.h"

#include "tide/nn/frozen_training.h"
#include "tide/nn/in_place.h"
#include "tide/nn/lean_backward.h"

#include <c10/core/GradMode.h>

#include "tide/kernels/geglu_cpu.h"
#include "tide/kernels/int8_compute.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {

GegluImpl::GegluImpl(int64_t dim_in, int64_t dim_out) {
  proj = register_module("proj", Linear(dim_in, dim_out * 2));
}

at::Tensor GegluImpl::forward(const at::Tensor& x) {
  const at::Tensor projected = proj->forward(x);  // [B, L, 2·out]
  // Training keeps the projection alone for the backward, not gelu(gate) too.
  if (trains_against_frozen(projected)) return geglu_lean(projected);  // [B, L, out]
  if (runtime::optimizations().geglu_kernel && !(c10::GradMode::is_enabled() && projected.requires_grad()) &&
      kernels::geglu_kernel_supported(projected))
    return kernels::geglu_forward(projected);  // [B, L, out]
  const auto halves = projected.chunk(2, -1);  // 2 × [B, L, out]
  return gelu_gated(halves[0], halves[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
  const int64_t inner = dim * mult;
  geglu_ = Geglu(dim, inner);
  out_ = Linear(inner, dim);
  out_->int8_activation_scales = kernels::ActivationScales::per_row;  // the GEGLU output (nn/layers.cpp)
  net = register_module("net", torch::nn::ModuleList(geglu_, torch::nn::Identity(), out_));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) { return out_->forward(geglu_->forward(x)); }

}  // namespace tide::nn
