// Elementwise steps of training against frozen weights whose backward keeps less than the separate ops would.
// Autograd keeps, per op, what that op's backward reads: silu(group_norm(x)) keeps x for the norm and the
// normalized tensor for silu, value·gelu(gate) keeps gelu(gate) beside value and gate. These functions keep
// only x, and only the projection holding value and gate, recompute the rest in the backward (a
// memory-bound pass) and give autograd's gradients bit for bit. At 512 px that is ~0.3 GiB less per SD 1.5
// training step. Used where nn/frozen_training.h's trains_against_frozen() holds.
#pragma once
#include <ATen/ATen.h>

namespace tide::nn {

// silu(group_norm(x, groups, weight, bias, eps)) keeping only x.  x: [N, C, *]
at::Tensor group_norm_silu_lean(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                                double eps);

// GEGLU's product value · gelu(gate) of the halves of `projected` [..., 2·D] -> [..., D], keeping only
// `projected`; its backward writes both halves' gradients into one tensor.
at::Tensor geglu_lean(const at::Tensor& projected);

}  // namespace tide::nn
