// diffusers' AutoencoderTiny (models/autoencoders/autoencoder_tiny.py, vae.py EncoderTiny/DecoderTiny): the
// tiny distilled autoencoder TAESD, a fast stand-in for AutoencoderKL's decoder (and encoder). Plain convs
// and ReLUs, no normalization and no attention. Parameter names equal the checkpoint's tensor names
// (`decoder.layers.2.conv.0.weight`: nn.Sequential indices; ReLU and Upsample entries hold no tensors).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tide/nn/layers.h"

namespace tide::models {

struct AutoencoderTinyConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> encoder_block_out_channels = {64, 64, 64, 64};
  std::vector<int64_t> decoder_block_out_channels = {64, 64, 64, 64};
  std::vector<int64_t> num_encoder_blocks = {1, 3, 3, 3};
  std::vector<int64_t> num_decoder_blocks = {3, 3, 3, 1};
  int64_t latent_channels = 4;
  int64_t upsampling_scaling_factor = 2;
  double scaling_factor = 1.0;  // pipelines divide latents by it before decode()
  double shift_factor = 0.0;
  double latent_magnitude = 3.0;  // scale_latents/unscale_latents (uint8 round trips), not used by pipelines
  double latent_shift = 0.5;

  // Image pixels per latent: the encoder's stride-2 convs (one per block after the first).
  int64_t scale_factor() const { return int64_t{1} << (num_encoder_blocks.size() - 1); }
  // Throws tide::Error naming the first unsupported or inconsistent value.
  void validate() const;
  // From config.json (`_class_name` AutoencoderTiny); diffusers' defaults for absent keys.
  static AutoencoderTinyConfig from_json(const nlohmann::json& json);
};

namespace taesd {

// AutoencoderTinyBlock: relu(conv(relu(conv(relu(conv(x))))) + skip(x)), 3x3 convs `conv.0/2/4` with bias;
// skip = identity, or a 1x1 conv without bias when the channel count changes.
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t in_channels, int64_t out_channels);
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, out, H, W]

  nn::Conv2d conv0{nullptr}, conv2{nullptr}, conv4{nullptr};
  nn::Conv2d skip{nullptr};
};
TORCH_MODULE(Block);

// An nn.Sequential of convs, ReLUs, blocks and nearest upsamplings, registered under its indices.
class LayersImpl : public torch::nn::Module {
 public:
  void add_conv(nn::Conv2d conv);
  void add_relu();
  void add_block(Block block);
  void add_upsample(int64_t factor);
  at::Tensor forward(const at::Tensor& x);

 private:
  struct Layer {
    enum class Kind { kConv, kRelu, kBlock, kUpsample } kind;
    nn::Conv2d conv{nullptr};
    Block block{nullptr};
    int64_t factor = 1;
  };
  std::vector<Layer> layers_;
};
TORCH_MODULE(Layers);

// EncoderTiny: (x + 1) / 2 -> conv -> blocks -> [stride-2 conv (no bias) -> blocks] ... -> conv to latents.
class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const AutoencoderTinyConfig& config);
  at::Tensor forward(const at::Tensor& x);  // [B, 3, H, W] in [-1, 1] -> [B, latent, H/f, W/f]
  Layers layers{nullptr};
};
TORCH_MODULE(Encoder);

// DecoderTiny: tanh(z/3)·3 -> conv -> ReLU -> [blocks -> upsample -> conv (no bias)] ... -> blocks -> conv
// -> ·2 - 1.
class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const AutoencoderTinyConfig& config);
  at::Tensor forward(const at::Tensor& z);  // [B, latent, h, w] -> [B, 3, h·f, w·f]
  Layers layers{nullptr};
};
TORCH_MODULE(Decoder);

}  // namespace taesd

class AutoencoderTinyImpl : public torch::nn::Module {
 public:
  explicit AutoencoderTinyImpl(const AutoencoderTinyConfig& config);

  // x [B, in_channels, H, W] in [-1, 1] -> latents [B, latent, H/f, W/f] (deterministic: no distribution,
  // not multiplied by the scaling factor). H and W must be multiples of f.
  at::Tensor encode(const at::Tensor& x);
  // z [B, latent, h, w] (already divided by the scaling factor) -> image [B, out_channels, h·f, w·f], about
  // [-1, 1], not clamped. Wrong shapes throw tide::Error.
  at::Tensor decode(const at::Tensor& z);

  const AutoencoderTinyConfig& config() const { return config_; }

  taesd::Encoder encoder{nullptr};
  taesd::Decoder decoder{nullptr};

 private:
  AutoencoderTinyConfig config_;
};
TORCH_MODULE(AutoencoderTiny);

// Loads a diffusers AutoencoderTiny folder (config.json + diffusion_pytorch_model[.variant].safetensors).
// A folder of another kind (an AutoencoderKL, a whole pipeline) is a tide::Error that says what it is.
AutoencoderTiny load_autoencoder_tiny(const std::filesystem::path& folder, const std::string& variant = "");

}  // namespace tide::models
