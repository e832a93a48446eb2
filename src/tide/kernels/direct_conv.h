// Direct convolution for CPUs as matrix products read in place: with the weight stored HWIO ([kh, kw, C, K]
// contiguous, output channels fastest), each kernel tap's [C, K] slice is the B operand of a row-major
// product whose A rows are input pixels (channels last), found through a table of row pointers, so neither
// the weight nor the input is copied or re-laid out per call. A channels-last weight (training's layout) is
// read in place too, in 8×8 pieces transposed as they are copied; and a same-size convolution's input
// gradient is the same products on the weight flipped and transposed (kernels/weight_taps.h).
//
// Why: oneDNN re-lays out the weight on every call (channels last -> its blocked format), which weighs most
// where the maps are small and the weights large: SD 1.5's 1280-channel layers at 256 px see 8×8 and 4×4
// maps with 59 MB weights. There (at most 256 output pixels) the workers split the weight's rows, each read
// front to back at the memory's speed: 1.4–2.5× oneDNN (bench/README.md, "Small maps"). Winograd
// (winograd_conv.h) stays the choice on larger maps.
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

// `weight` [K, C, kh, kw] with its memory laid out as [kh, kw, C, K] (strides {1, K, kw·C·K, C·K}).
bool is_hwio(const at::Tensor& weight);

// A copy of `weight` [K, C, kh, kw] (any layout and dtype) laid out HWIO, the same values and shape.
at::Tensor to_hwio(const at::Tensor& weight);

// True when direct_conv2d() computes this convolution: float32 CPU input [N, C, H, W], weight (any floating
// dtype: callers widen a 16-bit weight, which keeps its layout) of a shape direct_conv2d_wants_hwio() takes,
// square kernel, no gradient needed; the weight HWIO, or channels last (as training keeps it) where the
// output has at most 256 pixels.
bool direct_conv2d_supported(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding);

// Whether the direct kernel should take a convolution of x (or the input gradient of one, with grad as x) that it
// supports even where a Winograd kernel pays off: at most 256 output pixels (the workers then split the weight's rows, each read front to back) and
// a weight over 16 MiB, whose reading then bounds both kernels, and Winograd's reads 128 bytes per row (SD 1.5's
// 1280-channel layers on 8×8 at guidance batch 2 and on 16×16 in training at 512 px: 1.3–1.7× faster).
bool direct_conv2d_preferred(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding);

// Whether a layer with this weight shape should store its weight HWIO for direct_conv2d() (its inputs'
// sizes are not known yet): kernels larger than 1×1, K a multiple of 8 and C at least 8 (thinner products are
// better left to oneDNN), on a CPU with AVX2 and FMA.
bool direct_conv2d_wants_hwio(int64_t out_channels, int64_t in_channels, int64_t kernel_size);

// conv2d(x, weight, bias, stride, padding) -> [N, K, H', W'], channels last. x: any memory format (made
// channels last); weight: float32, HWIO or (at most 256 output pixels) channels last; bias: [K] or undefined.
at::Tensor direct_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                         int64_t padding);

// The input gradient of a stride-1 convolution with an odd k×k kernel and padding k / 2 (the same size out
// as in), for frozen-weight training: ∂(conv2d(x, weight))/∂x applied to `grad` [N, K, H, W] -> [N, C, H, W],
// channels last. It is itself such a convolution, of grad with the weight flipped and transposed, which the
// products read in place. Supported for float32 gradients of at most 256 pixels (small maps, where oneDNN's
// backward-data kernel re-lays out a large weight for little work), weights HWIO or channels last with C a
// multiple of 8, on CPUs with AVX2 and FMA.
bool direct_conv2d_input_gradient_supported(const at::Tensor& grad, const at::Tensor& weight, int64_t stride,
                                            int64_t padding);
at::Tensor direct_conv2d_input_gradient(const at::Tensor& grad, const at::Tensor& weight, int64_t padding);

}  // namespace tide::kernels
