// diffusers' UNet2DConditionModel (models/unets/unet_2d_condition.py) for SD 1.x, 2.x and XL: the
// noise (or v) predictor. Parameter names equal the checkpoint's tensor names
// (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`, `add_embedding.linear_1.weight`, ...).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include "tide/nn/layers.h"

#include <vector>

#include "tide/models/unet2d_condition_config.h"
#include "tide/nn/timestep_embedding.h"
#include "tide/nn/unet_2d_blocks.h"

namespace tide::models {

class UNet2DConditionModelImpl : public torch::nn::Module {
 public:
  explicit UNet2DConditionModelImpl(const UNet2DConditionConfig& config);

  // sample [B, in_channels, h, w]; timestep: the same for the whole batch (cast to float32 as diffusers'
  // time projection does); encoder_hidden_states [B, L, cross_attention_dim] (L = 77);
  // SDXL (addition_embed_type text_time): text_embeds [B, D] (pooled text embeddings) and time_ids [B, 6]
  // (original size, crop top-left, target size), undefined otherwise.
  // timestep_cond [B, time_cond_proj_dim]: the guidance-scale embedding of LCM-distilled models (optional).
  // -> [B, out_channels, h, w] in sample's dtype, computed in the weights' dtype (inputs are cast).
  // Wrong shapes throw tide::Error.
  at::Tensor forward(const at::Tensor& sample, double timestep, const at::Tensor& encoder_hidden_states,
                     const at::Tensor& text_embeds = {}, const at::Tensor& time_ids = {},
                     const at::Tensor& timestep_cond = {});

  const UNet2DConditionConfig& config() const { return config_; }

  // Training: each resnet and transformer keeps only its inputs and runs again in the backward pass
  // (diffusers' enable_gradient_checkpointing, which checkpoints the same layers), trading one more forward
  // pass for memory.
  bool gradient_checkpointing = false;

  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::TimestepEmbedding time_embedding{nullptr};
  nn::TimestepEmbedding add_embedding{nullptr};  // text_time only
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  nn::UNetMidBlockCrossAttn mid_block{nullptr};  // null when mid_block_type is null
  nn::GroupNorm conv_norm_out{nullptr};

 private:
  void check_inputs(const at::Tensor& sample, const at::Tensor& encoder_hidden_states, const at::Tensor& text_embeds,
                    const at::Tensor& time_ids, const at::Tensor& timestep_cond) const;
  // Timestep (+ guidance embedding, + SDXL added conditions) embedding: [B, time_embed_dim].
  at::Tensor embed_time(const at::Tensor& sample, double timestep, const at::Tensor& text_embeds,
                        const at::Tensor& time_ids, const at::Tensor& timestep_cond);

  UNet2DConditionConfig config_;
  std::vector<nn::UNetDownBlock> down_;
  std::vector<nn::UNetUpBlock> up_;
};
TORCH_MODULE(UNet2DConditionModel);

}  // namespace tide::models
