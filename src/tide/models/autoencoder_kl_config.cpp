#include "tide/models/autoencoder_kl_config.h"

#include <cmath>

#include "tide/io/json_file.h"
#include "tide/models/presets.h"
#include "tide/runtime/error.h"

namespace tide::models {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw Error("VAE config: " + what);
}

}  // namespace

void AutoencoderKLConfig::validate() const {
  const size_t n = block_out_channels.size();
  require(n > 0, "block_out_channels is empty");
  require(down_block_types.size() == n && up_block_types.size() == n,
          "down_block_types, up_block_types and block_out_channels must have the same length");
  for (const auto& t : down_block_types)
    require(t == "DownEncoderBlock2D", "unsupported down_block_types entry \"" + t + "\" (supported: DownEncoderBlock2D)");
  for (const auto& t : up_block_types)
    require(t == "UpDecoderBlock2D", "unsupported up_block_types entry \"" + t + "\" (supported: UpDecoderBlock2D)");
  require(act_fn == "silu" || act_fn == "swish", "unsupported act_fn \"" + act_fn + "\" (supported: silu)");
  require(norm_num_groups > 0, "norm_num_groups must be positive, got " + std::to_string(norm_num_groups));
  for (int64_t c : block_out_channels)
    require(c > 0 && c % norm_num_groups == 0, "block_out_channels entry " + std::to_string(c) +
                                                   " is not a positive multiple of norm_num_groups " +
                                                   std::to_string(norm_num_groups));
  require(in_channels > 0 && out_channels > 0 && latent_channels > 0, "channel counts must be positive");
  require(layers_per_block > 0, "layers_per_block must be positive, got " + std::to_string(layers_per_block));
  require(scaling_factor > 0 && std::isfinite(scaling_factor), "scaling_factor must be positive");
  require(latents_mean.empty() || static_cast<int64_t>(latents_mean.size()) == latent_channels,
          "latents_mean must have latent_channels entries");
  require(latents_std.empty() || static_cast<int64_t>(latents_std.size()) == latent_channels,
          "latents_std must have latent_channels entries");
}

AutoencoderKLConfig AutoencoderKLConfig::from_json(const nlohmann::json& j) {
  using io::json_get;
  if (!j.is_object()) throw Error("VAE config: expected a JSON object");
  AutoencoderKLConfig c;
  c.in_channels = json_get<int64_t>(j, "in_channels", c.in_channels);
  c.out_channels = json_get<int64_t>(j, "out_channels", c.out_channels);
  c.down_block_types = json_get<std::vector<std::string>>(j, "down_block_types", c.down_block_types);
  c.up_block_types = json_get<std::vector<std::string>>(j, "up_block_types", c.up_block_types);
  c.block_out_channels = json_get<std::vector<int64_t>>(j, "block_out_channels", c.block_out_channels);
  c.layers_per_block = json_get<int64_t>(j, "layers_per_block", c.layers_per_block);
  c.act_fn = json_get<std::string>(j, "act_fn", c.act_fn);
  c.latent_channels = json_get<int64_t>(j, "latent_channels", c.latent_channels);
  c.norm_num_groups = json_get<int64_t>(j, "norm_num_groups", c.norm_num_groups);
  if (j.contains("sample_size") && j.at("sample_size").is_array() && !j.at("sample_size").empty())
    c.sample_size = j.at("sample_size").at(0).get<int64_t>();
  else
    c.sample_size = json_get<int64_t>(j, "sample_size", c.sample_size);
  c.scaling_factor = json_get<double>(j, "scaling_factor", c.scaling_factor);
  if (j.contains("shift_factor") && !j.at("shift_factor").is_null())
    c.shift_factor = json_get<double>(j, "shift_factor", 0.0);
  c.latents_mean = json_get<std::vector<double>>(j, "latents_mean", {});
  c.latents_std = json_get<std::vector<double>>(j, "latents_std", {});
  c.force_upcast = json_get<bool>(j, "force_upcast", c.force_upcast);
  c.use_quant_conv = json_get<bool>(j, "use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = json_get<bool>(j, "use_post_quant_conv", c.use_post_quant_conv);
  c.mid_block_add_attention = json_get<bool>(j, "mid_block_add_attention", c.mid_block_add_attention);
  if (j.contains("norm_type") && !j.at("norm_type").is_null() && j.at("norm_type") != "group")
    throw Error("VAE config: unsupported norm_type = " + j.at("norm_type").dump() + " (supported: group)");
  c.validate();
  return c;
}

nlohmann::json AutoencoderKLConfig::preset_json(const std::string& name) {
  return presets::preset_config(name, "vae");
}

}  // namespace tide::models
