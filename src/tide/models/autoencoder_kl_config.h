// Configuration of diffusers' AutoencoderKL (vae/config.json).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace tide::models {

struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types = {"DownEncoderBlock2D"};
  std::vector<std::string> up_block_types = {"UpDecoderBlock2D"};
  std::vector<int64_t> block_out_channels = {64};
  int64_t layers_per_block = 1;
  std::string act_fn = "silu";
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;       // null in SD 1.x / 2.x / XL
  std::vector<double> latents_mean, latents_std;  // empty unless given (one per latent channel)
  bool force_upcast = true;  // the pipeline runs this VAE in float32 even when the rest is float16
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  // Image size / latent size: 2^(number of blocks - 1) (8 for SD).
  int64_t scale_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }

  // Throws tide::Error naming the first invalid or unsupported value.
  void validate() const;
  // From vae/config.json with diffusers' defaults for absent keys.
  static AutoencoderKLConfig from_json(const nlohmann::json& json);
  // The VAE config.json of "sd15", "sd21" or "sdxl" (same architecture; sizes and scaling factors differ).
  static nlohmann::json preset_json(const std::string& name);
  static AutoencoderKLConfig preset(const std::string& name) { return from_json(preset_json(name)); }
};

}  // namespace tide::models
