// Which kernel a float convolution's forward takes on channels-last inputs: one rule for the Conv2d module and
// for `tide bench --conv`, so that the path the benchmark names is the one the module runs. The frozen-weight
// backward chooses among the same kernels (conv_input_gradient.h).
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

enum class ConvKernel { onednn, winograd_few_tiles, winograd_f4, winograd_chunked, direct, matmul_1x1 };

// "oneDNN", "direct", "winograd, few tiles", "winograd F(4x4), few tiles", "winograd, chunked" or "oneDNN matmul
// (1x1)", as `tide bench --conv` reports the kernel.
const char* conv_kernel_name(ConvKernel kernel);

// The kernel for conv2d(x, weight, stride, padding) with `winograd`, `winograd_f4` (F(4×4) tiles, with
// `winograd`) and `direct` allowed. On a float weight the few-tiles kernel reads in place (HWIO, as the direct
// kernel stores it, or channels last): F(4×4) tiles where they pay; then the direct kernel where it is preferred
// (direct_conv2d_preferred); else F(2×2) tiles, few-tiles kernel where it pays, else the chunked Winograd kernel
// where that pays, else the direct kernel where it is supported, else, with `matmul_1x1`, a 1×1 convolution on a
// small map as oneDNN's matmul (conv1x1_as_matmul_pays_off, kernels/matmul_f32.h), else oneDNN's convolution.
ConvKernel conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 bool winograd, bool winograd_f4, bool direct, bool matmul_1x1);

}  // namespace tide::kernels
