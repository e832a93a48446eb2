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

// A 1×1 convolution (stride 1, no padding) as the same product: x [B, C, H, W] channels last is [B·H·W, C] in
// memory, so y = x · weight[K, C]ᵀ + bias, answered channels last [B, K, H, W].
at::Tensor conv1x1_f32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// Whether conv1x1_f32 computes this convolution: float32 CPU x [B, C, H, W], weight [K, C, 1, 1] (any floating
// dtype: callers widen a 16-bit weight to float32 first), bias undefined or [K] of any floating dtype (widened).
bool conv1x1_f32_supported(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

// Whether a supported 1×1 convolution of x should take conv1x1_f32 rather than oneDNN's convolution: on maps of
// at most 512 pixels (B·H·W), where that convolution is slower (AVX2 Zen 2, 2 threads: 1.34–1.36× faster as a
// product at 1280 and 2560 channels on 8×8 at batch 2, 1.00–1.07× on 16×16; from 32×32 on 0.93–1.02×, and
// 0.77× on the VAE's large maps).
bool conv1x1_as_matmul_pays_off(const at::Tensor& x);

}  // namespace tide::kernels
