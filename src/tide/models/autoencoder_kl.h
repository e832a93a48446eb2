// diffusers' AutoencoderKL (models/autoencoders/autoencoder_kl.py, vae.py): the image <-> latent VAE of
// SD 1.x, 2.x and XL. Parameter names equal the checkpoint's tensor names
// (`encoder.down_blocks.0.resnets.0.conv1.weight`, `decoder.mid_block.attentions.0.to_q.weight`, `quant_conv.weight`).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include "tide/nn/layers.h"

#include <vector>

#include "tide/models/autoencoder_kl_config.h"
#include "tide/nn/vae_blocks.h"

namespace tide::models {

namespace vae {

// conv_in → DownEncoderBlock2D × n → UNetMidBlock2D → GroupNorm → SiLU → conv_out (2·latent: mean, logvar).
class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const AutoencoderKLConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, 3, H, W] -> [B, 2·latent, H/f, W/f]

  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  nn::UNetMidBlock2D mid_block{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};

 private:
  std::vector<nn::DownEncoderBlock2D> down_;
};
TORCH_MODULE(Encoder);

// conv_in → UNetMidBlock2D → UpDecoderBlock2D × n (layers_per_block + 1 resnets) → GroupNorm → SiLU → conv_out.
class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const AutoencoderKLConfig& config);
  at::Tensor forward(const at::Tensor& z);  // [B, latent, h, w] -> [B, 3, h·f, w·f]

  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::UNetMidBlock2D mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  nn::GroupNorm conv_norm_out{nullptr};

 private:
  std::vector<nn::UpDecoderBlock2D> up_;
};
TORCH_MODULE(Decoder);

}  // namespace vae

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  // The latent distribution (diffusers' DiagonalGaussianDistribution), [B, latent, H/f, W/f] each;
  // logvar clamped to [-30, 20]. Not multiplied by the scaling factor.
  struct Moments {
    at::Tensor mean, logvar;
    at::Tensor std() const { return at::exp(0.5 * logvar); }
    // mean + std · noise (noise ~ N(0, 1), drawn by the caller from its generator).
    at::Tensor sample(const at::Tensor& noise) const { return mean + std() * noise; }
  };

  explicit AutoencoderKLImpl(const AutoencoderKLConfig& config);

  // x [B, in_channels, H, W] in [-1, 1] -> moments of the latent distribution.
  Moments encode(const at::Tensor& x);
  // z [B, latent, h, w] (already divided by the scaling factor) -> image [B, out_channels, h·f, w·f],
  // about [-1, 1], not clamped.
  at::Tensor decode(const at::Tensor& z);

  const AutoencoderKLConfig& config() const { return config_; }

  vae::Encoder encoder{nullptr};
  vae::Decoder decoder{nullptr};
  nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};  // null when use_(post_)quant_conv is false

 private:
  AutoencoderKLConfig config_;
};
TORCH_MODULE(AutoencoderKL);

}  // namespace tide::models
