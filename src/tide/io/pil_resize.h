// Image resizing exactly as Pillow's `Image.resize(size, Image.BICUBIC / Image.LANCZOS)` does it for
// 8-bit images (libImaging/Resample.c): a separable convolution with the filter (bicubic a = -0.5, or
// Lanczos-3: sinc(x) sinc(x/3) on |x| < 3) whose support is widened by the downscale factor, 22-bit
// fixed-point coefficients, the horizontal pass first, and rounding to uint8 after each pass.
// diffusers' textual inversion data goes through the bicubic one and its VaeImageProcessor.preprocess
// (img2img / inpaint init images and masks) through the Lanczos one, so both match bit for bit.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace tide::io {

// Pillow's precompute_coeffs for one axis: for each output pixel, the first input index, the number of
// taps and the normalized double weights (before the fixed-point conversion).
struct ResampleCoefficients {
  std::vector<int> first;              // [out_size]
  std::vector<int> count;              // [out_size]
  std::vector<std::vector<double>> w;  // [out_size][count]
};
enum class ResampleFilter { kBicubic, kLanczos };
ResampleCoefficients resample_coefficients(int in_size, int out_size, ResampleFilter filter);
inline ResampleCoefficients bicubic_coefficients(int in_size, int out_size) {
  return resample_coefficients(in_size, out_size, ResampleFilter::kBicubic);
}

// rgb8: uint8 [H, W, C] (C = 1..4, contiguous or not) -> uint8 [out_height, out_width, C].
at::Tensor pil_resize(const at::Tensor& rgb8, int out_width, int out_height, ResampleFilter filter);
inline at::Tensor pil_resize_bicubic(const at::Tensor& rgb8, int out_width, int out_height) {
  return pil_resize(rgb8, out_width, out_height, ResampleFilter::kBicubic);
}
inline at::Tensor pil_resize_lanczos(const at::Tensor& rgb8, int out_width, int out_height) {
  return pil_resize(rgb8, out_width, out_height, ResampleFilter::kLanczos);
}

}  // namespace tide::io
