#include "tide/models/autoencoder_kl.h"

#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/nn/in_place.h"

namespace tide::models {

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return nn::Conv2d(in, out, kernel, 1, kernel / 2);
}

nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return nn::GroupNorm(groups, channels, 1e-6);
}

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

}  // namespace

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
  h = nn::silu_temporary(conv_norm_out->forward(h));
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
  h = nn::silu_temporary(conv_norm_out->forward(h));
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

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  if (!z.defined() || z.dim() != 4 || z.size(1) != config_.latent_channels)
    throw Error("VAE decode: latents must be [B, " + std::to_string(config_.latent_channels) + ", h, w], got " +
                (z.defined() ? shape_string(z.sizes()) : std::string("nothing")));
  const at::Tensor h = post_quant_conv ? post_quant_conv->forward(z) : z;  // [B, latent, h, w]
  return decoder->forward(h).contiguous();                                  // [B, 3, h·f, w·f]
}

}  // namespace tide::models
