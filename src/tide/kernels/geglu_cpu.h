// GEGLU's elementwise part, value · gelu(gate) with the exact (erf) GELU, in one AVX2 pass over the projection
// [..., 2n] = [value | gate] instead of libtorch's gelu on the strided gate half (not vectorized there: 6.5 ns
// per element against 2.3 for a contiguous input, AVX2 EPYC) and a product; and its backward the same way,
// erf and exp computed once per element for both halves' gradients.
// erf(z) is Abramowitz & Stegun 7.1.26, the approximation libtorch's vectorized erf uses (absolute error
// ≤ 1.5·10⁻⁷); for z < 0 the kernel takes 1 + erf(z) = t·r·exp(-z²) directly, without the cancellation.
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

// Whether geglu_forward() and geglu_backward() run this projection: float32 on the CPU, contiguous, an even
// last dimension, and a CPU with AVX2 and FMA.
bool geglu_kernel_supported(const at::Tensor& projected);

// [..., 2n] -> [..., n]: projected[..., :n] · gelu(projected[..., n:]).
at::Tensor geglu_forward(const at::Tensor& projected);

// The gradient of geglu_forward(projected) given the output's gradient `grad` [..., n] (any strides):
// [..., 2n] = [gelu(gate) · grad | gelu'(gate) · value · grad].
at::Tensor geglu_backward(const at::Tensor& projected, const at::Tensor& grad);

}  // namespace tide::kernels
