// diffusers' AutoencoderKL (models/autoencoders/autoencoder_kl.py, vae.py): the image <-> latent VAE of
// SD 1.x, 2.x and XL. Parameter names equal the checkpoint's tensor names
// (`encoder.down_blocks.0.resnets.0.conv1.weight`, `decoder.mid_block.attentions.0.to_q.weight`, `quant_conv.weight`).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include "tide/nn/layers.h"

#include <string>
#include <vector>

#include "tide/models/autoencoder_kl_config.h"
#include "tide/nn/vae_blocks.h"

namespace tide::models {

// Whether the VAE decodes the latent in overlapping tiles (diffusers' AutoencoderKL.enable_tiling()): the
// decoder's activations then grow with the tile, not with the image, at the price of an output that is no
// longer the untiled one (each tile has its own GroupNorm statistics and mid-block attention; seams are
// hidden by blending) and of decoding the overlaps twice.
enum class VaeTiling {
  kOff,   // one decoder pass over the whole latent (diffusers' default)
  kOn,    // tiles whenever the latent is larger than one tile (diffusers with use_tiling = True)
  kAuto,  // like kOn, but only for images of more than kAutoTilingMinPixels pixels
};

// kAuto leaves images of up to 1024x1024 pixels (1 MP) untiled: the default sizes of SD 1.5 (512), SD 2.1
// (768) and SDXL (1024, and its ~1 MP aspect-ratio buckets such as 832x1216) decode exactly as diffusers
// decodes them by default, and their untiled decode fits in a few GB. Beyond 1 MP the decoder's memory
// keeps growing with the pixel count (2048x2048: 4x that of 1024x1024), so larger images are tiled.
inline constexpr int64_t kAutoTilingMinPixels = int64_t{1024} * 1024;

// "off" | "on" | "auto"; anything else is a tide::Error that lists the choices and names `what` (a flag).
VaeTiling parse_vae_tiling(const std::string& name, const std::string& what = "VAE tiling");
const char* vae_tiling_name(VaeTiling tiling);

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
  // about [-1, 1], not clamped. Tiled (tiled_decode) when `tiles(h, w, tiling)`.
  at::Tensor decode(const at::Tensor& z, VaeTiling tiling = VaeTiling::kOff);

  // diffusers' tiled_decode, whatever the latent's size: tiles of tile_latent_size() latents start every
  // tile_stride() latents; each decoded tile (post_quant_conv and decoder) is blended over the blend_extent()
  // pixels it shares with the tile above and the tile to its left, then cropped to its first
  // tile_sample_size() - blend_extent() rows and columns. Same shapes in and out as decode().
  at::Tensor tiled_decode(const at::Tensor& z);
  // Whether decode() tiles a latent of h x w under `tiling`: never for kOff; for kOn when h or w is larger
  // than one tile (diffusers' _decode); for kAuto when, in addition, h·f x w·f is more than
  // kAutoTilingMinPixels.
  bool tiles(int64_t h, int64_t w, VaeTiling tiling) const;

  // Tile sizes, from the config as diffusers derives them: a tile is sample_size pixels
  // (tile_sample_min_size), sample_size / f latents (tile_latent_min_size); neighbours overlap by
  // kTileOverlap of a tile.
  static constexpr double kTileOverlap = 0.25;  // diffusers' tile_overlap_factor
  int64_t tile_sample_size() const { return config_.sample_size; }
  int64_t tile_latent_size() const { return config_.sample_size / config_.scale_factor(); }
  int64_t tile_stride() const { return static_cast<int64_t>(tile_latent_size() * (1 - kTileOverlap)); }  // latents
  int64_t blend_extent() const { return static_cast<int64_t>(tile_sample_size() * kTileOverlap); }         // pixels

  const AutoencoderKLConfig& config() const { return config_; }

  vae::Encoder encoder{nullptr};
  vae::Decoder decoder{nullptr};
  nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};  // null when use_(post_)quant_conv is false

 private:
  void check_latents(const at::Tensor& z) const;  // throws tide::Error unless [B, latent, h, w]
  AutoencoderKLConfig config_;
};
TORCH_MODULE(AutoencoderKL);

}  // namespace tide::models
