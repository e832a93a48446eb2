// The UNet's blocks (diffusers models/unets/unet_2d_blocks.py): CrossAttnDownBlock2D / DownBlock2D,
// UNetMidBlock2DCrossAttn, CrossAttnUpBlock2D / UpBlock2D. A down (up) block with cross-attention is the
// plain one plus one Transformer2DModel after each resnet, so one class covers both; the parameter names
// (`resnets.N`, `attentions.N`, `downsamplers.0`, `upsamplers.0`) are diffusers'.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <vector>

#include "tide/nn/resnet.h"
#include "tide/nn/sampling.h"
#include "tide/nn/transformer_2d.h"

namespace tide::nn {

struct UNetBlockOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t prev_output_channels = 0;  // up blocks: channels coming from the block below
  int64_t temb_channels = 0;
  int64_t num_layers = 1;            // resnets (up blocks: layers_per_block + 1)
  bool add_sample = false;           // down blocks: downsampler; up blocks: upsampler
  int64_t downsample_padding = 1;
  int64_t groups = 32;
  double eps = 1e-5;
  double output_scale_factor = 1.0;
  // Cross-attention: a Transformer2DModel after each resnet when `cross_attention` is set.
  bool cross_attention = false;
  int64_t heads = 8;
  std::vector<int64_t> transformer_layers;  // per resnet (the mid block: per attention)
  int64_t cross_attention_dim = 768;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

// CrossAttnDownBlock2D (cross_attention) or DownBlock2D.
class UNetDownBlockImpl : public torch::nn::Module {
 public:
  explicit UNetDownBlockImpl(const UNetBlockOptions& options);
  // x [B, Cin, H, W], temb [B, T], context [B, L, D] -> [B, Cout, H/2, W/2] (H, W without downsampler);
  // appends each resnet (+attention) output and the downsampler output to `skips`. `checkpointed`: each resnet
  // and transformer a gradient-checkpointed segment (nn::checkpoint).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                     std::vector<at::Tensor>& skips, bool checkpointed = false);
  int64_t num_resnets() const { return static_cast<int64_t>(resnets_.size()); }

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Downsample2D downsampler_{nullptr};
};
TORCH_MODULE(UNetDownBlock);

// UNetMidBlock2DCrossAttn: resnet, then (attention, resnet) per entry of transformer_layers (one in SD).
class UNetMidBlockCrossAttnImpl : public torch::nn::Module {
 public:
  explicit UNetMidBlockCrossAttnImpl(const UNetBlockOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context,
                     bool checkpointed = false);  // [B, C, H, W]

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
};
TORCH_MODULE(UNetMidBlockCrossAttn);

// CrossAttnUpBlock2D (cross_attention) or UpBlock2D.
class UNetUpBlockImpl : public torch::nn::Module {
 public:
  explicit UNetUpBlockImpl(const UNetBlockOptions& options);
  // x [B, Cprev, H, W]; takes num_resnets() skip tensors from the back of `skips` (concatenated on the
  // channel axis before each resnet); -> [B, Cout, 2H, 2W] (or `upsample_size`; H, W without upsampler).
  // `last_layer_input`, when given, receives what enters the last resnet before its skip is concatenated
  // (DeepCache's cached features). `checkpointed`: as the down block's.
  at::Tensor forward(const at::Tensor& x, std::vector<at::Tensor>& skips, const at::Tensor& temb,
                     const at::Tensor& context, const std::vector<int64_t>& upsample_size = {},
                     at::Tensor* last_layer_input = nullptr, bool checkpointed = false);
  // The last resnet (+ attention, + upsampler) alone, on that input and its skip.
  at::Tensor forward_last_layer(const at::Tensor& last_layer_input, const at::Tensor& skip, const at::Tensor& temb,
                                const at::Tensor& context, const std::vector<int64_t>& upsample_size = {});
  int64_t num_resnets() const { return static_cast<int64_t>(resnets_.size()); }

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};

 private:
  std::vector<ResnetBlock2D> resnets_;
  std::vector<Transformer2DModel> attentions_;
  Upsample2D upsampler_{nullptr};
};
TORCH_MODULE(UNetUpBlock);

}  // namespace tide::nn
