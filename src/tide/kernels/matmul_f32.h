// Float32 matrix products of linear layers through oneDNN's matmul (the library libtorch links) instead of
// at::linear's BLAS call. On the AVX2 EPYC this was measured on (2 threads, bench/README.md "Linear layers
// through oneDNN"), oneDNN's jit GEMM was 1.0-1.1x OpenBLAS on large square-ish products and 1.2-1.8x on
// the UNet's and text encoder's short or thin ones (77 or 154 tokens, 320 channels over 2048 tokens).
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

// a [..., K] · b [K, N] (+ bias [N]) -> [..., N], all float32 on the CPU. b may have any 2-D strides (a
// linear layer passes its weight [N, K] as weight.t()); a is read in place when its rows are evenly strided.
at::Tensor matmul_f32(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias = {});

// Whether matmul_f32 takes these operands: float32 CPU tensors, b 2-D, bias undefined or float32 [N].
bool matmul_f32_supported(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias = {});

}  // namespace tide::kernels
