// Convolutions against frozen weights, for training that only needs gradients with respect to activations
// (textual inversion: the UNet's weights never change). The forward runs the inference path (channels last,
// Winograd, the direct kernel, in-place ops downstream) and keeps only the weight, not the input; the backward
// computes the input gradient alone (Winograd, the direct kernel or oneDNN's backward-data kernel:
// conv2d_input_gradient). Plain autograd runs the NCHW forward and keeps every convolution's input for a weight
// gradient nobody asks for.
#pragma once
#include <ATen/ATen.h>

#include "tide/kernels/conv_forward_kernel.h"

#include <functional>

namespace tide::kernels {

// ∂(conv2d(x, weight, stride, padding))/∂x applied to `grad` [N, K, H', W'] -> [N, C, H, W] in grad's layout,
// where `input_size` = {N, C, H, W}. weight: [K, C, kh, kw] in grad's dtype (any memory format).
// `winograd`: a 3×3, stride-1, padding-1 convolution's input gradient is itself such a convolution, of `grad`
// with the weight flipped and transposed to [C, K, 3, 3], and goes through a Winograd kernel where one pays
// off for the shape (winograd_conv3x3_input_gradient() on a channels-last or HWIO weight, read in place, or
// winograd_conv3x3() on large maps; then channels last). `direct`: other same-size convolutions on small maps
// go through direct_conv2d_input_gradient() where it supports them (direct_conv.h). Otherwise oneDNN's
// backward-data kernel. `winograd_f4` (with `winograd`): F(4×4) tiles where they pay (winograd_f4_pays_off), ahead of
// the direct kernel.
at::Tensor conv2d_input_gradient(const at::Tensor& grad, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 at::IntArrayRef input_size, bool winograd = false, bool direct = false,
                                 bool winograd_f4 = false);

// The kernel conv2d_input_gradient() takes for these arguments (conv_kernel_name() names it for `tide bench
// --conv --backward`).
ConvKernel input_gradient_kernel(const at::Tensor& grad, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 at::IntArrayRef input_size, bool winograd, bool direct, bool winograd_f4);

// conv2d(x, weight, bias, stride, padding) as `inference_forward(x)` computes it (called with gradients off),
// differentiable with respect to x only: weight and bias must not require gradients. `weight` is the layer's
// weight as stored (float, 16-bit, or int8 with its per-channel `weight_scale`): the backward widens it to the
// gradient's dtype when it runs, so no widened copy waits in the graph. `winograd`, `direct`, `winograd_f4`:
// conv2d_input_gradient's.
at::Tensor conv2d_frozen_weights(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                                 int64_t stride, int64_t padding,
                                 const std::function<at::Tensor(const at::Tensor&)>& inference_forward,
                                 bool winograd = false, bool direct = false, bool winograd_f4 = false);

}  // namespace tide::kernels
