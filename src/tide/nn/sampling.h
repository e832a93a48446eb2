// diffusers' Downsample2D and Upsample2D (models/downsampling.py, upsampling.py) with a convolution,
// as every SD UNet and VAE uses them. Parameter names: `conv.weight`, `conv.bias`.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include "tide/nn/layers.h"

#include <vector>

namespace tide::nn {

// 3x3 convolution with stride 2. padding 1 (UNet) or 0 (VAE encoder: the input is first padded by one
// zero row/column at the bottom/right, diffusers' asymmetric (0, 1, 0, 1) pad).
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t padding);
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]

  Conv2d conv{nullptr};

 private:
  int64_t padding_;
};
TORCH_MODULE(Downsample2D);

// Nearest-neighbour ×2 (or to `output_size` when given), then a 3x3 convolution.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  // x [B, C, H, W] -> [B, C, 2H, 2W] or [B, C, output_size[0], output_size[1]]
  at::Tensor forward(const at::Tensor& x, const std::vector<int64_t>& output_size = {});

  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace tide::nn
