// Training against frozen weights (textual inversion): gradients flow into a layer's input, never into its
// weights. Every path that computes only what such training needs (convolutions' and linear layers'
// input gradients, nn/lean_backward.h) takes it under this one condition.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "tide/runtime/optimizations.h"

namespace tide::nn {

// Gradients on and wanted for x, none for the weights given (undefined ones count as frozen), and the
// frozen_backward optimization on.
inline bool trains_against_frozen(const at::Tensor& x, const at::Tensor& weight = {}, const at::Tensor& bias = {}) {
  auto frozen = [](const at::Tensor& t) { return !t.defined() || !t.requires_grad(); };
  return c10::GradMode::is_enabled() && x.requires_grad() && frozen(weight) && frozen(bias) &&
         runtime::optimizations().frozen_backward;
}

}  // namespace tide::nn
