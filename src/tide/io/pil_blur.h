// Pillow's ImageFilter.GaussianBlur(radius) for 8-bit single-channel images (libImaging/BoxBlur.c): the
// extended box blur of Gwosdek et al. — three passes of a box whose fractional radius gives the Gaussian's
// variance, horizontal then vertical, 8.24 fixed point with rounding to uint8 after every pass, edges
// extended. Used to soften inpainting masks (A1111's "mask blur") before they are binarized.
#pragma once
#include <ATen/ATen.h>

namespace tide::io {

// Pillow's _gaussian_blur_radius: the box radius whose `passes` box blurs have variance radius^2.
float pil_box_radius_for_gaussian(float radius, int passes = 3);

// uint8 [H, W] -> uint8 [H, W]; radius 0 returns a copy.
at::Tensor pil_gaussian_blur(const at::Tensor& grey8, double radius);

}  // namespace tide::io
