// diffusers' ResnetBlock2D (models/resnet.py) with time_embedding_norm "default" and SiLU:
// GroupNorm → SiLU → conv1 (+ projected time embedding) → GroupNorm → SiLU → conv2, plus a 1x1
// `conv_shortcut` when the channel count changes. The VAE's blocks have no time embedding.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include "tide/nn/layers.h"

namespace tide::nn {

struct ResnetOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t temb_channels = 0;  // 0: no `time_emb_proj` (VAE)
  int64_t groups = 32;
  double eps = 1e-6;
  double output_scale_factor = 1.0;
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetOptions& options);

  // x [B, Cin, H, W], temb [B, T] (undefined without time embedding) -> [B, Cout, H, W]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb = {});

  GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr};
  Linear time_emb_proj{nullptr};
  Conv2d conv_shortcut{nullptr};

 private:
  double output_scale_factor_;
};
TORCH_MODULE(ResnetBlock2D);

}  // namespace tide::nn
