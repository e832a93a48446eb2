#include "tide/models/unet2d_condition.h"

#include "tide/models/deep_cache.h"

#include <c10/core/GradMode.h>

#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::models {

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return nn::Conv2d(in, out, kernel, 1, (kernel - 1) / 2);
}

}  // namespace

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNet2DConditionConfig& config) : config_(config) {
  const UNet2DConditionConfig& c = config_;
  c.validate();
  const auto& channels = c.block_out_channels;
  const int64_t n = c.num_blocks();
  const int64_t temb = c.time_embed_dim();

  conv_in = register_module("conv_in", conv(c.in_channels, channels[0], c.conv_in_kernel));
  time_embedding = register_module("time_embedding", nn::TimestepEmbedding(channels[0], temb, c.time_cond_proj_dim));
  if (c.has_text_time())
    add_embedding = register_module("add_embedding", nn::TimestepEmbedding(c.projection_class_embeddings_input_dim, temb));

  auto block_options = [&](int64_t i, bool cross_attention) {
    nn::UNetBlockOptions o;
    o.temb_channels = temb;
    o.groups = c.norm_num_groups;
    o.eps = c.norm_eps;
    o.output_scale_factor = c.resnet_out_scale_factor;
    o.downsample_padding = c.downsample_padding;
    o.cross_attention = cross_attention;
    o.heads = c.num_attention_heads[i];
    o.cross_attention_dim = c.cross_attention_dim[i];
    o.use_linear_projection = c.use_linear_projection;
    o.upcast_attention = c.upcast_attention;
    return o;
  };

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < n; ++i) {
    nn::UNetBlockOptions o = block_options(i, c.down_block_types[i] == "CrossAttnDownBlock2D");
    o.in_channels = i == 0 ? channels[0] : channels[i - 1];
    o.out_channels = channels[i];
    o.num_layers = c.layers_per_block[i];
    o.transformer_layers.assign(o.num_layers, c.transformer_layers_per_block[i]);
    o.add_sample = i < n - 1;
    down_.push_back(nn::UNetDownBlock(o));
    down_blocks->push_back(down_.back());
  }

  if (!c.mid_block_type.empty()) {
    nn::UNetBlockOptions o = block_options(n - 1, true);
    o.in_channels = o.out_channels = channels[n - 1];
    o.output_scale_factor = c.mid_block_scale_factor;
    o.transformer_layers = {c.transformer_layers_per_block[n - 1]};
    mid_block = register_module("mid_block", nn::UNetMidBlockCrossAttn(o));
  }

  // Up blocks mirror the down blocks: block i works at the level of down block n-1-i.
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t level = n - 1 - i;
    nn::UNetBlockOptions o = block_options(level, c.up_block_types[i] == "CrossAttnUpBlock2D");
    o.prev_output_channels = channels[std::min(level + 1, n - 1)];
    o.out_channels = channels[level];
    o.in_channels = channels[std::max<int64_t>(level - 1, 0)];
    o.num_layers = c.layers_per_block[level] + 1;
    o.transformer_layers.assign(o.num_layers, c.transformer_layers_per_block[level]);
    o.add_sample = i < n - 1;
    up_.push_back(nn::UNetUpBlock(o));
    up_blocks->push_back(up_.back());
  }

  conv_norm_out = register_module(
      "conv_norm_out",
      nn::GroupNorm(c.norm_num_groups, channels[0], c.norm_eps));
  conv_out = register_module("conv_out", conv(channels[0], c.out_channels, c.conv_out_kernel));
}

void UNet2DConditionModelImpl::check_inputs(const at::Tensor& sample, const at::Tensor& encoder_hidden_states,
                                            const at::Tensor& text_embeds, const at::Tensor& time_ids,
                                            const at::Tensor& timestep_cond) const {
  const auto& c = config_;
  if (!sample.defined() || sample.dim() != 4 || sample.size(1) != c.in_channels)
    throw Error("UNet: sample must be [B, " + std::to_string(c.in_channels) + ", h, w], got " +
                (sample.defined() ? shape_string(sample.sizes()) : std::string("nothing")));
  const int64_t b = sample.size(0);
  const int64_t context_dim = c.cross_attention_dim[0];
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != b ||
      encoder_hidden_states.size(2) != context_dim)
    throw Error("UNet: encoder_hidden_states must be [" + std::to_string(b) + ", L, " + std::to_string(context_dim) +
                "], got " +
                (encoder_hidden_states.defined() ? shape_string(encoder_hidden_states.sizes()) : std::string("nothing")));
  if (timestep_cond.defined()) {
    if (c.time_cond_proj_dim == 0)
      throw Error("UNet: timestep_cond given, but this UNet has no time_cond_proj_dim (not a guidance-distilled model)");
    if (timestep_cond.dim() != 2 || timestep_cond.size(0) != b || timestep_cond.size(1) != c.time_cond_proj_dim)
      throw Error("UNet: timestep_cond must be [" + std::to_string(b) + ", " + std::to_string(c.time_cond_proj_dim) +
                  "], got " + shape_string(timestep_cond.sizes()));
  }
  if (!c.has_text_time()) return;
  // time_ids: 6 values for SDXL base (original size, crop top-left, target size), 5 for the refiner.
  if (!time_ids.defined() || time_ids.dim() != 2 || time_ids.size(0) != b)
    throw Error("UNet (SDXL): time_ids must be [" + std::to_string(b) + ", 6], got " +
                (time_ids.defined() ? shape_string(time_ids.sizes()) : std::string("nothing")));
  const int64_t text_dim = c.projection_class_embeddings_input_dim - time_ids.size(1) * c.addition_time_embed_dim;
  if (!text_embeds.defined() || text_embeds.dim() != 2 || text_embeds.size(0) != b || text_embeds.size(1) != text_dim)
    throw Error("UNet (SDXL): text_embeds must be [" + std::to_string(b) + ", " + std::to_string(text_dim) +
                "] (projection_class_embeddings_input_dim " + std::to_string(c.projection_class_embeddings_input_dim) +
                " minus " + std::to_string(time_ids.size(1)) + " time ids x " + std::to_string(c.addition_time_embed_dim) +
                "), got " + (text_embeds.defined() ? shape_string(text_embeds.sizes()) : std::string("nothing")));
}

at::Tensor UNet2DConditionModelImpl::embed_time(const at::Tensor& sample, double timestep, const at::Tensor& text_embeds,
                                                const at::Tensor& time_ids, const at::Tensor& timestep_cond) {
  const auto& c = config_;
  const int64_t b = sample.size(0);
  const at::Tensor t = at::full({b}, timestep, sample.options().dtype(at::kFloat));  // [B]
  const at::Tensor t_emb =
      nn::timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift).to(sample.scalar_type());
  at::Tensor emb = time_embedding->forward(t_emb, timestep_cond);  // [B, T]
  if (c.has_text_time()) {
    const at::Tensor time_embeds =
        nn::timestep_embedding(time_ids.flatten(), c.addition_time_embed_dim, c.flip_sin_to_cos, c.freq_shift)
            .reshape({b, -1});  // [B, 6·A]
    // float32 like diffusers' concat of (text_embeds, float32 time_embeds).
    const at::Tensor add_embeds = at::cat({text_embeds.to(time_embeds.scalar_type()), time_embeds}, -1);  // [B, P]
    emb = emb + add_embedding->forward(add_embeds.to(emb.scalar_type()));
  }
  return emb;
}

at::Tensor UNet2DConditionModelImpl::forward(const at::Tensor& sample, double timestep,
                                             const at::Tensor& encoder_hidden_states, const at::Tensor& text_embeds,
                                             const at::Tensor& time_ids, const at::Tensor& timestep_cond) {
  check_inputs(sample, encoder_hidden_states, text_embeds, time_ids, timestep_cond);
  const auto& c = config_;
  // The model computes in its parameters' dtype (bf16 under --dtype bf16; weights may be stored narrower) and
  // answers in the caller's, so latents and scheduler arithmetic stay float32.
  const at::ScalarType dtype = conv_in->bias.scalar_type();
  if (sample.scalar_type() != dtype) {
    auto cast = [dtype](const at::Tensor& t) { return t.defined() && t.is_floating_point() ? t.to(dtype) : t; };
    return forward(cast(sample), timestep, cast(encoder_hidden_states), cast(text_embeds), time_ids,
                   cast(timestep_cond))
        .to(sample.scalar_type());
  }
  const at::Tensor& context = encoder_hidden_states;  // [B, L, D]

  // Sizes not divisible by 2^(downsamplers): each upsampler is told the size of the matching skip.
  const int64_t factor = c.downsample_factor();
  const bool forward_upsample_size = sample.size(2) % factor != 0 || sample.size(3) % factor != 0;

  const at::Tensor emb = embed_time(sample, timestep, text_embeds, time_ids, timestep_cond);  // [B, T]

  at::Tensor h = c.center_input_sample ? sample * 2.0 - 1.0 : sample;
  h = conv_in->forward(h);  // [B, C0, h, w]
  DeepCache* cache = current_deep_cache();
  if (cache && cache->reuse() && cache->features().size(0) == h.size(0)) {
    // A cached call: the last up block's last layer on the kept deep features and this call's conv_in skip.
    h = up_.back()->forward_last_layer(cache->features(), h, emb, context);  // [B, C0, h, w]
  } else {
    const bool checkpointed = gradient_checkpointing && c10::GradMode::is_enabled();
    std::vector<at::Tensor> skips{h};
    for (auto& down : down_) h = down->forward(h, emb, context, skips, checkpointed);  // [B, Cn, h/2^n, w/2^n]
    if (mid_block) h = mid_block->forward(h, emb, context, checkpointed);

    for (size_t i = 0; i < up_.size(); ++i) {
      std::vector<int64_t> upsample_size;
      if (i + 1 < up_.size() && forward_upsample_size) {
        const at::Tensor& next_skip = skips[skips.size() - static_cast<size_t>(up_[i]->num_resnets()) - 1];
        upsample_size = {next_skip.size(2), next_skip.size(3)};
      }
      at::Tensor* features = cache && i + 1 == up_.size() ? &cache->features() : nullptr;
      h = up_[i]->forward(h, skips, emb, context, upsample_size, features, checkpointed);
    }
  }

  h = conv_norm_out->forward_silu(h);  // [B, C0, h, w]
  return conv_out->forward(h).contiguous();  // [B, out_channels, h, w]
}

}  // namespace tide::models
