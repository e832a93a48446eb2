#include "tide/models/unet2d_condition_config.h"

#include <cmath>

#include "tide/io/json_file.h"
#include "tide/models/presets.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::models {

namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& what) { throw Error("UNet config: " + what); }

void require(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

bool present(const json& j, const std::string& key) { return j.contains(key) && !j.at(key).is_null(); }

// A key whose only supported value is null/absent (or `allowed`).
void require_value(const json& j, const std::string& key, const json& allowed, const std::string& note) {
  if (!present(j, key)) return;
  if (!allowed.is_null() && j.at(key) == allowed) return;
  fail("unsupported " + key + " = " + j.at(key).dump() + " (" + note + ")");
}

// An int that applies to every block, or a list with one int per block.
std::vector<int64_t> per_block(const json& j, const std::string& key, size_t blocks, int64_t fallback) {
  if (!present(j, key)) return std::vector<int64_t>(blocks, fallback);
  const json& v = j.at(key);
  if (v.is_number_integer()) return std::vector<int64_t>(blocks, v.get<int64_t>());
  if (v.is_array()) {
    std::vector<int64_t> out;
    for (const json& e : v) {
      if (!e.is_number_integer()) fail("unsupported " + key + " = " + v.dump() + " (expected an int or a list of ints)");
      out.push_back(e.get<int64_t>());
    }
    if (out.size() != blocks)
      fail(key + " = " + v.dump() + " has " + std::to_string(out.size()) + " entries, expected one per block (" +
           std::to_string(blocks) + ")");
    return out;
  }
  fail("unsupported " + key + " = " + v.dump() + " (expected an int or a list of ints)");
}

}  // namespace

void UNet2DConditionConfig::validate() const {
  const size_t n = down_block_types.size();
  require(n > 0, "down_block_types is empty");
  require(up_block_types.size() == n, "down_block_types and up_block_types differ in length (" + std::to_string(n) +
                                          " vs " + std::to_string(up_block_types.size()) + ")");
  require(block_out_channels.size() == n, "block_out_channels " + shape_string(block_out_channels) + " must have " +
                                              std::to_string(n) + " entries (one per down block)");
  for (const auto* v : {&layers_per_block, &cross_attention_dim, &transformer_layers_per_block, &num_attention_heads})
    require(v->size() == n, "per-block settings must have " + std::to_string(n) + " entries");
  for (const auto& t : down_block_types)
    require(t == "CrossAttnDownBlock2D" || t == "DownBlock2D",
            "unsupported down_block_types entry \"" + t + "\" (supported: CrossAttnDownBlock2D, DownBlock2D)");
  for (const auto& t : up_block_types)
    require(t == "CrossAttnUpBlock2D" || t == "UpBlock2D",
            "unsupported up_block_types entry \"" + t + "\" (supported: CrossAttnUpBlock2D, UpBlock2D)");
  require(mid_block_type.empty() || mid_block_type == "UNetMidBlock2DCrossAttn",
          "unsupported mid_block_type \"" + mid_block_type + "\" (supported: UNetMidBlock2DCrossAttn, null)");
  require(act_fn == "silu" || act_fn == "swish", "unsupported act_fn \"" + act_fn + "\" (supported: silu)");
  require(in_channels > 0 && out_channels > 0, "in_channels and out_channels must be positive");
  require(norm_num_groups > 0, "norm_num_groups must be positive, got " + std::to_string(norm_num_groups));
  require(norm_eps > 0 && std::isfinite(norm_eps), "norm_eps must be positive");
  for (size_t i = 0; i < n; ++i) {
    const int64_t c = block_out_channels[i];
    require(c > 0 && c % norm_num_groups == 0, "block_out_channels " + shape_string(block_out_channels) +
                                                   " must be positive multiples of norm_num_groups " +
                                                   std::to_string(norm_num_groups));
    require(layers_per_block[i] > 0, "layers_per_block " + shape_string(layers_per_block) + " must be positive");
    require(transformer_layers_per_block[i] > 0,
            "transformer_layers_per_block " + shape_string(transformer_layers_per_block) + " must be positive");
    require(cross_attention_dim[i] > 0,
            "cross_attention_dim " + shape_string(cross_attention_dim) + " must be positive");
    require(num_attention_heads[i] > 0 && c % num_attention_heads[i] == 0,
            "block " + std::to_string(i) + ": " + std::to_string(c) + " channels are not divisible into " +
                std::to_string(num_attention_heads[i]) + " attention heads (attention_head_dim / num_attention_heads)");
  }
  require(conv_in_kernel > 0 && conv_in_kernel % 2 == 1, "conv_in_kernel must be odd, got " + std::to_string(conv_in_kernel));
  require(conv_out_kernel > 0 && conv_out_kernel % 2 == 1,
          "conv_out_kernel must be odd, got " + std::to_string(conv_out_kernel));
  require(downsample_padding == 0 || downsample_padding == 1,
          "unsupported downsample_padding = " + std::to_string(downsample_padding) + " (supported: 0, 1)");
  require(time_embedding_dim >= 0, "time_embedding_dim must be positive");
  require(time_cond_proj_dim >= 0, "time_cond_proj_dim must be positive");
  require(addition_embed_type.empty() || addition_embed_type == "text_time",
          "unsupported addition_embed_type \"" + addition_embed_type + "\" (supported: text_time, null)");
  if (has_text_time()) {
    require(addition_time_embed_dim > 0, "addition_embed_type text_time needs addition_time_embed_dim");
    require(projection_class_embeddings_input_dim > addition_time_embed_dim,
            "addition_embed_type text_time needs projection_class_embeddings_input_dim > addition_time_embed_dim, got " +
                std::to_string(projection_class_embeddings_input_dim));
  }
  require(mid_block_scale_factor > 0 && resnet_out_scale_factor > 0, "scale factors must be positive");
}

UNet2DConditionConfig UNet2DConditionConfig::from_json(const json& j) {
  using io::json_get;
  if (!j.is_object()) fail("expected a JSON object");
  // Features of UNet2DConditionModel that no SD 1.x / 2.x / XL checkpoint uses.
  require_value(j, "time_embedding_type", "positional", "supported: positional");
  require_value(j, "class_embed_type", nullptr, "class embeddings are not supported");
  require_value(j, "num_class_embeds", nullptr, "class embeddings are not supported");
  require_value(j, "class_embeddings_concat", false, "class embeddings are not supported");
  require_value(j, "encoder_hid_dim", nullptr, "encoder_hid_proj is not supported");
  require_value(j, "encoder_hid_dim_type", nullptr, "encoder_hid_proj is not supported");
  require_value(j, "dual_cross_attention", false, "supported: false");
  require_value(j, "attention_type", "default", "supported: default");
  require_value(j, "resnet_time_scale_shift", "default", "supported: default");
  require_value(j, "resnet_skip_time_act", false, "supported: false");
  require_value(j, "time_embedding_act_fn", nullptr, "supported: null");
  require_value(j, "timestep_post_act", nullptr, "supported: null");
  require_value(j, "cross_attention_norm", nullptr, "supported: null");
  require_value(j, "reverse_transformer_layers_per_block", nullptr, "supported: null");
  if (present(j, "only_cross_attention")) {
    const json& v = j.at("only_cross_attention");
    bool any = v.is_boolean() ? v.get<bool>() : true;
    if (v.is_array()) {
      any = false;
      for (const json& e : v) any = any || !e.is_boolean() || e.get<bool>();
    }
    if (any) fail("unsupported only_cross_attention = " + v.dump() + " (supported: false)");
  }
  if (present(j, "dropout") && json_get<double>(j, "dropout", 0.0) != 0.0)
    fail("unsupported dropout = " + j.at("dropout").dump() + " (supported: 0)");
  if (j.contains("norm_num_groups") && j.at("norm_num_groups").is_null())
    fail("unsupported norm_num_groups = null (supported: a group count)");

  UNet2DConditionConfig c;
  if (present(j, "sample_size")) {
    const json& s = j.at("sample_size");
    c.sample_size = s.is_array() && !s.empty() ? s.at(0).get<int64_t>() : json_get<int64_t>(j, "sample_size", 64);
  }
  c.in_channels = json_get<int64_t>(j, "in_channels", c.in_channels);
  c.out_channels = json_get<int64_t>(j, "out_channels", c.out_channels);
  c.center_input_sample = json_get<bool>(j, "center_input_sample", c.center_input_sample);
  c.flip_sin_to_cos = json_get<bool>(j, "flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = json_get<double>(j, "freq_shift", c.freq_shift);
  c.down_block_types = json_get<std::vector<std::string>>(j, "down_block_types", c.down_block_types);
  c.up_block_types = json_get<std::vector<std::string>>(j, "up_block_types", c.up_block_types);
  c.mid_block_type = j.contains("mid_block_type") ? json_get<std::string>(j, "mid_block_type", "") : c.mid_block_type;
  c.block_out_channels = json_get<std::vector<int64_t>>(j, "block_out_channels", c.block_out_channels);
  const size_t n = c.down_block_types.size();
  c.layers_per_block = per_block(j, "layers_per_block", n, 2);
  c.downsample_padding = json_get<int64_t>(j, "downsample_padding", c.downsample_padding);
  c.mid_block_scale_factor = json_get<double>(j, "mid_block_scale_factor", c.mid_block_scale_factor);
  c.act_fn = json_get<std::string>(j, "act_fn", c.act_fn);
  c.norm_num_groups = json_get<int64_t>(j, "norm_num_groups", c.norm_num_groups);
  c.norm_eps = json_get<double>(j, "norm_eps", c.norm_eps);
  c.cross_attention_dim = per_block(j, "cross_attention_dim", n, 1280);
  c.transformer_layers_per_block = per_block(j, "transformer_layers_per_block", n, 1);
  const char* heads_key = present(j, "num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
  c.num_attention_heads = per_block(j, heads_key, n, 8);
  c.use_linear_projection = json_get<bool>(j, "use_linear_projection", c.use_linear_projection);
  c.upcast_attention = json_get<bool>(j, "upcast_attention", c.upcast_attention);
  c.resnet_out_scale_factor = json_get<double>(j, "resnet_out_scale_factor", c.resnet_out_scale_factor);
  c.time_embedding_dim = json_get<int64_t>(j, "time_embedding_dim", 0);
  c.time_cond_proj_dim = json_get<int64_t>(j, "time_cond_proj_dim", 0);
  c.conv_in_kernel = json_get<int64_t>(j, "conv_in_kernel", c.conv_in_kernel);
  c.conv_out_kernel = json_get<int64_t>(j, "conv_out_kernel", c.conv_out_kernel);
  c.addition_embed_type = json_get<std::string>(j, "addition_embed_type", "");
  c.addition_time_embed_dim = json_get<int64_t>(j, "addition_time_embed_dim", 0);
  c.projection_class_embeddings_input_dim = json_get<int64_t>(j, "projection_class_embeddings_input_dim", 0);
  c.validate();
  return c;
}

json UNet2DConditionConfig::preset_json(const std::string& name) {
  return presets::preset_config(name, "unet");
}

}  // namespace tide::models
