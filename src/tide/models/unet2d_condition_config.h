// Configuration of diffusers' UNet2DConditionModel (unet/config.json), for what SD 1.x, 2.x and XL use.
// Values that may be an int or a per-block list in config.json are stored expanded, one per down block.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tide::models {

struct UNet2DConditionConfig {
  int64_t sample_size = 64;  // informational (latent size the model was trained at)
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";  // "" = no mid block (config null)
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<int64_t> layers_per_block = {2, 2, 2, 2};
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1;
  std::string act_fn = "silu";
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::vector<int64_t> cross_attention_dim = {1280, 1280, 1280, 1280};
  std::vector<int64_t> transformer_layers_per_block = {1, 1, 1, 1};
  // Heads per down block: `num_attention_heads`, or else `attention_head_dim` — which in SD configs
  // holds the number of heads (diffusers: `num_attention_heads = num_attention_heads or attention_head_dim`).
  std::vector<int64_t> num_attention_heads = {8, 8, 8, 8};
  bool use_linear_projection = false;
  bool upcast_attention = false;
  double resnet_out_scale_factor = 1.0;
  int64_t time_embedding_dim = 0;  // 0: 4 · block_out_channels[0]
  // LCM-distilled models: width of the guidance-scale embedding the time embedding takes (0 = none).
  // Pipelines then run without classifier-free guidance and pass the scale through this embedding.
  int64_t time_cond_proj_dim = 0;
  int64_t conv_in_kernel = 3;
  int64_t conv_out_kernel = 3;
  // SDXL: "text_time" adds Linear embeddings of [text_embeds, sinusoidal(time_ids)]; "" = none.
  std::string addition_embed_type;
  int64_t addition_time_embed_dim = 0;
  int64_t projection_class_embeddings_input_dim = 0;

  int64_t num_blocks() const { return static_cast<int64_t>(down_block_types.size()); }
  int64_t time_embed_dim() const { return time_embedding_dim > 0 ? time_embedding_dim : 4 * block_out_channels.at(0); }
  // Latent size divisor at which no upsample size has to be forwarded: 2^(number of downsamplers).
  int64_t downsample_factor() const { return int64_t{1} << (num_blocks() - 1); }
  bool has_text_time() const { return addition_embed_type == "text_time"; }

  // Throws tide::Error naming the first invalid or unsupported value.
  void validate() const;
  // From unet/config.json: diffusers' defaults for absent keys; unsupported values (class embeddings,
  // other block types, ...) throw tide::Error naming the key and the value.
  static UNet2DConditionConfig from_json(const nlohmann::json& json);
  // The config.json of a released model: "sd15" (runwayml/stable-diffusion-v1-5), "sd21"
  // (stabilityai/stable-diffusion-2-1), "sdxl" (stabilityai/stable-diffusion-xl-base-1.0).
  static nlohmann::json preset_json(const std::string& name);
  static UNet2DConditionConfig preset(const std::string& name) { return from_json(preset_json(name)); }
};

}  // namespace tide::models
