#include "tide/models/autoencoder_kl.h"

#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::models {

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return nn::Conv2d(in, out, kernel, 1, kernel / 2);
}

nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return nn::GroupNorm(groups, channels, 1e-6);
}

// diffusers' blend_v (dim 2) / blend_h (dim 3): the first e rows or columns of `b` fade from the last e of
// `a` (the tile above / to the left) to b's own, in place: b[y] = a[-e + y]·(1 - y/e) + b[y]·(y/e).
void blend(const at::Tensor& a, at::Tensor& b, int64_t dim, int64_t blend_extent) {
  const int64_t e = std::min({a.size(dim), b.size(dim), blend_extent});
  if (e <= 0) return;
  // The weights are computed in double and rounded to float, as Python floats are when they multiply a
  // float32 tensor, so that the result is diffusers' bit for bit.
  std::vector<float> from_a(e), from_b(e);
  for (int64_t y = 0; y < e; ++y) {
    from_a[y] = static_cast<float>(1.0 - static_cast<double>(y) / e);
    from_b[y] = static_cast<float>(static_cast<double>(y) / e);
  }
  std::vector<int64_t> shape(4, 1);
  shape[dim] = e;  // [1, 1, e, 1] or [1, 1, 1, e]
  const at::Tensor wa = at::tensor(from_a).view(shape), wb = at::tensor(from_b).view(shape);
  at::Tensor head = b.narrow(dim, 0, e);
  head.copy_(a.narrow(dim, a.size(dim) - e, e) * wa + head * wb);
}

}  // namespace

VaeTiling parse_vae_tiling(const std::string& name, const std::string& what) {
  if (name == "off") return VaeTiling::kOff;
  if (name == "on") return VaeTiling::kOn;
  if (name == "auto") return VaeTiling::kAuto;
  throw Error(what + " must be auto, on or off, got '" + name + "'");
}

const char* vae_tiling_name(VaeTiling tiling) {
  switch (tiling) {
    case VaeTiling::kOff: return "off";
    case VaeTiling::kOn: return "on";
    case VaeTiling::kAuto: return "auto";
  }
  return "?";
}

namespace vae {

EncoderImpl::EncoderImpl(const AutoencoderKLConfig& c) {
  const auto& channels = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(channels.size());
  conv_in = register_module("conv_in", conv(c.in_channels, channels[0], 3));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < n; ++i) {
    nn::VaeBlockOptions o;
    o.in_channels = i == 0 ? channels[0] : channels[i - 1];
    o.out_channels = channels[i];
    o.num_layers = c.layers_per_block;
    o.add_sample = i < n - 1;
    o.groups = c.norm_num_groups;
    down_.push_back(nn::DownEncoderBlock2D(o));
    down_blocks->push_back(down_.back());
  }
  mid_block = register_module("mid_block", nn::UNetMidBlock2D(channels[n - 1], c.norm_num_groups, c.mid_block_add_attention));
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, channels[n - 1]));
  conv_out = register_module("conv_out", conv(channels[n - 1], 2 * c.latent_channels, 3));
}

at::Tensor EncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv_in->forward(x);                 // [B, C0, H, W]
  for (auto& block : down_) h = block->forward(h);    // [B, Cn, H/f, W/f]
  h = mid_block->forward(h);
  h = conv_norm_out->forward_silu(h);
  return conv_out->forward(h);  // [B, 2·latent, H/f, W/f]
}

DecoderImpl::DecoderImpl(const AutoencoderKLConfig& c) {
  const auto& channels = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(channels.size());
  conv_in = register_module("conv_in", conv(c.latent_channels, channels[n - 1], 3));
  mid_block = register_module("mid_block", nn::UNetMidBlock2D(channels[n - 1], c.norm_num_groups, c.mid_block_add_attention));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t level = n - 1 - i;
    nn::VaeBlockOptions o;
    o.in_channels = channels[std::min(level + 1, n - 1)];
    o.out_channels = channels[level];
    o.num_layers = c.layers_per_block + 1;
    o.add_sample = i < n - 1;
    o.groups = c.norm_num_groups;
    up_.push_back(nn::UpDecoderBlock2D(o));
    up_blocks->push_back(up_.back());
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, channels[0]));
  conv_out = register_module("conv_out", conv(channels[0], c.out_channels, 3));
}

at::Tensor DecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = conv_in->forward(z);  // [B, Cn, h, w]
  h = mid_block->forward(h);
  for (auto& block : up_) h = block->forward(h);  // [B, C0, h·f, w·f]
  h = conv_norm_out->forward_silu(h);
  return conv_out->forward(h);  // [B, out_channels, h·f, w·f]
}

}  // namespace vae

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& config) : config_(config) {
  config_.validate();
  const int64_t latent = config_.latent_channels;
  encoder = register_module("encoder", vae::Encoder(config_));
  decoder = register_module("decoder", vae::Decoder(config_));
  if (config_.use_quant_conv) quant_conv = register_module("quant_conv", conv(2 * latent, 2 * latent, 1));
  if (config_.use_post_quant_conv) post_quant_conv = register_module("post_quant_conv", conv(latent, latent, 1));
}

AutoencoderKLImpl::Moments AutoencoderKLImpl::encode(const at::Tensor& x) {
  if (!x.defined() || x.dim() != 4 || x.size(1) != config_.in_channels)
    throw Error("VAE encode: image must be [B, " + std::to_string(config_.in_channels) + ", H, W], got " +
                (x.defined() ? shape_string(x.sizes()) : std::string("nothing")));
  at::Tensor moments = encoder->forward(x);                  // [B, 2·latent, h, w]
  if (quant_conv) moments = quant_conv->forward(moments);
  const auto halves = moments.chunk(2, 1);
  return {halves[0], at::clamp(halves[1], -30.0, 20.0)};
}

void AutoencoderKLImpl::check_latents(const at::Tensor& z) const {
  if (!z.defined() || z.dim() != 4 || z.size(1) != config_.latent_channels)
    throw Error("VAE decode: latents must be [B, " + std::to_string(config_.latent_channels) + ", h, w], got " +
                (z.defined() ? shape_string(z.sizes()) : std::string("nothing")));
}

bool AutoencoderKLImpl::tiles(int64_t h, int64_t w, VaeTiling tiling) const {
  if (tiling == VaeTiling::kOff) return false;
  const int64_t tile = tile_latent_size();
  if (h <= tile && w <= tile) return false;  // fits in one tile: diffusers decodes it untiled
  if (tiling == VaeTiling::kOn) return true;
  const int64_t f = config_.scale_factor();
  return h * f * w * f > kAutoTilingMinPixels;
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z, VaeTiling tiling) {
  check_latents(z);
  if (tiles(z.size(2), z.size(3), tiling)) return tiled_decode(z);
  const at::Tensor h = post_quant_conv ? post_quant_conv->forward(z) : z;  // [B, latent, h, w]
  return decoder->forward(h).contiguous();                                  // [B, 3, h·f, w·f]
}

at::Tensor AutoencoderKLImpl::tiled_decode(const at::Tensor& z) {
  check_latents(z);
  const int64_t tile = tile_latent_size(), stride = tile_stride(), extent = blend_extent();
  const int64_t row_limit = tile_sample_size() - extent;  // pixels of each tile that reach the output
  if (stride < 1)
    throw Error("VAE tiling: sample_size " + std::to_string(config_.sample_size) + " gives tiles of " +
                std::to_string(tile) + " latents, too small to tile");
  const int64_t height = z.size(2), width = z.size(3);
  // diffusers decodes every tile, then blends them in place row by row: the tile above and the tile to the
  // left are blended ones by the time a tile is blended with them. Keeping the previous row of tiles is
  // enough for that, and the same arithmetic.
  std::vector<at::Tensor> above, out_rows;
  for (int64_t i = 0; i < height; i += stride) {
    std::vector<at::Tensor> row, kept;
    for (int64_t j = 0; j < width; j += stride) {
      const at::Tensor part = z.slice(2, i, i + tile).slice(3, j, j + tile);  // [B, latent, <=tile, <=tile]
      at::Tensor decoded =
          decoder->forward(post_quant_conv ? post_quant_conv->forward(part) : part);  // [B, 3, <=tile·f, <=tile·f]
      if (!above.empty()) blend(above[row.size()], decoded, 2, extent);
      if (!row.empty()) blend(row.back(), decoded, 3, extent);
      kept.push_back(decoded.slice(2, 0, row_limit).slice(3, 0, row_limit));
      row.push_back(decoded);
    }
    out_rows.push_back(at::cat(kept, 3));  // [B, 3, <=row_limit, w·f]
    above = std::move(row);
  }
  return at::cat(out_rows, 2).contiguous();  // [B, 3, h·f, w·f]
}

}  // namespace tide::models
