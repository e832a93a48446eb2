// Linear layers against frozen weights stored narrower than they compute (16-bit or int8), for training that
// only needs gradients with respect to activations (textual inversion with --weights f16|bf16). Autograd
// would keep each layer's widened float32 weight in the graph until the backward pass, a float32 copy of the
// whole model at the peak; this keeps the weight as stored and widens it again when the gradient is asked for.
// Float32 weights take it too (with the onednn_matmul optimization): both products go through oneDNN's matmul.
#pragma once
#include <ATen/ATen.h>

namespace tide::nn {

// linear(x, weight widened to x's dtype, bias) [..., in] -> [..., out], differentiable with respect to x only:
// weight and bias must not require gradients. `weight` [out, in] as stored (float, 16-bit, or int8 with its
// per-channel `weight_scale`).
at::Tensor linear_frozen_weights(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                                 const at::Tensor& bias);

}  // namespace tide::nn
