// Image resizing exactly as Pillow's `Image.resize(size, Image.BICUBIC)` does it for 8-bit RGB
// (libImaging/Resample.c): a separable convolution with the bicubic kernel (a = -0.5) whose support is
// widened by the downscale factor, 22-bit fixed-point coefficients, the horizontal pass first, and
// rounding to uint8 after each pass. diffusers' textual inversion data goes through it, so the training
// images match bit for bit.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace tide::train {

// Pillow's precompute_coeffs for one axis: for each output pixel, the first input index, the number of
// taps and the normalized double weights (before the fixed-point conversion).
struct ResampleCoefficients {
  std::vector<int> first;              // [out_size]
  std::vector<int> count;              // [out_size]
  std::vector<std::vector<double>> w;  // [out_size][count]
};
ResampleCoefficients bicubic_coefficients(int in_size, int out_size);

// rgb8: uint8 [H, W, C] (C = 1..4, contiguous or not) -> uint8 [out_height, out_width, C].
at::Tensor pil_resize_bicubic(const at::Tensor& rgb8, int out_width, int out_height);

}  // namespace tide::train
