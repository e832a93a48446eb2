// The VAE's blocks (diffusers models/unets/unet_2d_blocks.py): DownEncoderBlock2D, UpDecoderBlock2D and
// UNetMidBlock2D (resnet, self-attention with GroupNorm and residual, resnet). No time embedding anywhere.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <vector>

#include "tide/nn/attention.h"
#include "tide/nn/resnet.h"
#include "tide/nn/sampling.h"

namespace tide::nn {

struct VaeBlockOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t num_layers = 1;
  bool add_sample = false;  // downsampler (padding 0) / upsampler
  int64_t groups = 32;
  double eps = 1e-6;
};

class DownEncoderBlock2DImpl : public torch::nn::Module {
 public:
  explicit DownEncoderBlock2DImpl(const VaeBlockOptions& options);
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, H/2, W/2] (H, W when last)

  torch::nn::ModuleList resnets{nullptr}, downsamplers{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(DownEncoderBlock2D);

class UpDecoderBlock2DImpl : public torch::nn::Module {
 public:
  explicit UpDecoderBlock2DImpl(const VaeBlockOptions& options);
  at::Tensor forward(const at::Tensor& x);  // [B, Cin, H, W] -> [B, Cout, 2H, 2W] (H, W when last)

  torch::nn::ModuleList resnets{nullptr}, upsamplers{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UpDecoderBlock2D);

// UNetMidBlock2D as the VAE builds it: one head of dimension `channels`, eps 1e-6.
class UNetMidBlock2DImpl : public torch::nn::Module {
 public:
  UNetMidBlock2DImpl(int64_t channels, int64_t groups, bool add_attention);
  at::Tensor forward(const at::Tensor& x);  // [B, C, H, W] -> [B, C, H, W]

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  Attention attention_{nullptr};
};
TORCH_MODULE(UNetMidBlock2D);

}  // namespace tide::nn
