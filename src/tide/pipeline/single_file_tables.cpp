// Name tables, after diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (unet, vae and
// OpenCLIP maps) and loaders/single_file_utils.py (convert_ldm_unet/vae/clip, convert_open_clip_checkpoint).
#include "tide/pipeline/single_file_tables.h"

#include <algorithm>

#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::pipeline::detail {
namespace {
using nlohmann::json;
using std::to_string;

// Leaves whose weight and bias are renamed alike.
std::vector<Leaf> weight_and_bias(const std::vector<std::pair<std::string, std::string>>& pairs,
                                  Transform weight_transform = Transform::None) {
  std::vector<Leaf> leaves;
  for (const auto& [original, diffusers] : pairs) {
    leaves.push_back({original + ".weight", {diffusers + ".weight"}, weight_transform});
    leaves.push_back({original + ".bias", {diffusers + ".bias"}, Transform::None});
  }
  return leaves;
}

// LDM ResBlock -> diffusers ResnetBlock2D.
const std::vector<Leaf> kUnetResnet = weight_and_bias({{"in_layers.0", "norm1"},
                                                       {"in_layers.2", "conv1"},
                                                       {"out_layers.0", "norm2"},
                                                       {"out_layers.3", "conv2"},
                                                       {"emb_layers.1", "time_emb_proj"},
                                                       {"skip_connection", "conv_shortcut"}});

const std::vector<Leaf> kVaeResnet = weight_and_bias(
    {{"norm1", "norm1"}, {"conv1", "conv1"}, {"norm2", "norm2"}, {"conv2", "conv2"}, {"nin_shortcut", "conv_shortcut"}});

// The VAE's mid-block attention is made of 1x1 convolutions in the original, of linear layers in diffusers.
const std::vector<Leaf> kVaeAttention = [] {
  auto leaves = weight_and_bias({{"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"}, {"proj_out", "to_out.0"}},
                                Transform::ConvToLinear);
  const auto norm = weight_and_bias({{"norm", "group_norm"}});
  leaves.insert(leaves.end(), norm.begin(), norm.end());
  return leaves;
}();

// open_clip's ResidualAttentionBlock -> transformers' CLIPEncoderLayer; nn.MultiheadAttention keeps
// q, k and v stacked in one in_proj.
const std::vector<Leaf> kOpenClipLayer = [] {
  auto leaves = weight_and_bias({{"ln_1", "layer_norm1"},
                                 {"ln_2", "layer_norm2"},
                                 {"mlp.c_fc", "mlp.fc1"},
                                 {"mlp.c_proj", "mlp.fc2"},
                                 {"attn.out_proj", "self_attn.out_proj"}});
  for (const char* kind : {"weight", "bias"}) {
    const std::string k = kind;
    leaves.push_back({"attn.in_proj_" + k,
                      {"self_attn.q_proj." + k, "self_attn.k_proj." + k, "self_attn.v_proj." + k},
                      Transform::Chunk});
  }
  return leaves;
}();

bool ends_with_dot(const std::string& s) { return !s.empty() && s.back() == '.'; }

// A config value that is an int, or a per-block list of equal ints (layers_per_block).
int64_t single_int(const json& config, const std::string& key, const std::string& component) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) throw Error(component + " config has no '" + key + "'");
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty()) {
    const auto first = it->at(0).get<int64_t>();
    for (const auto& v : *it)
      if (v.get<int64_t>() != first)
        throw Error(component + " config: per-block '" + key + "' " + it->dump() +
                    " has no original single-file layout");
    return first;
  }
  throw Error(component + " config: '" + key + "' has an unexpected value " + it->dump());
}

std::vector<std::string> string_list(const json& config, const std::string& key, const std::string& component) {
  const auto it = config.find(key);
  if (it == config.end() || !it->is_array()) throw Error(component + " config has no list '" + key + "'");
  return it->get<std::vector<std::string>>();
}

const json& config_of(const std::map<std::string, json>& configs, const std::string& component) {
  auto it = configs.find(component);
  if (it == configs.end()) throw Error("no config for the " + component + " component");
  return it->second;
}

}  // namespace

// model.diffusion_model.*: input_blocks / middle_block / output_blocks -> down_blocks / mid_block / up_blocks.
ComponentTable unet_table(const json& config) {
  ComponentTable t{"unet", "model.diffusion_model.", {}, nullptr};
  auto add = [&t](std::string original, std::string diffusers, const std::vector<Leaf>* leaves = nullptr) {
    t.rules.push_back({std::move(original), std::move(diffusers), leaves});
  };
  const auto down = string_list(config, "down_block_types", "unet");
  const auto up = string_list(config, "up_block_types", "unet");
  const int64_t layers = single_int(config, "layers_per_block", "unet");
  const auto n = static_cast<int64_t>(down.size());
  if (static_cast<int64_t>(up.size()) != n) throw Error("unet config: down and up block lists differ in length");
  auto has_attention = [](const std::string& type) { return type.find("CrossAttn") != std::string::npos; };

  add("time_embed.0.", "time_embedding.linear_1.");
  add("time_embed.2.", "time_embedding.linear_2.");
  if (config.value("addition_embed_type", json()).is_string() && config["addition_embed_type"] == "text_time") {
    add("label_emb.0.0.", "add_embedding.linear_1.");  // SDXL: pooled text embeds and size/crop conditioning
    add("label_emb.0.2.", "add_embedding.linear_2.");
  }
  add("input_blocks.0.0.", "conv_in.");
  add("out.0.", "conv_norm_out.");
  add("out.2.", "conv_out.");

  // Each down block is `layers` LDM input blocks (resnet [+ transformer]) then one downsampler block;
  // each up block is `layers + 1` output blocks, the last ending in the upsampler.
  for (int64_t i = 0; i < n; ++i) {
    const std::string d = "down_blocks." + to_string(i) + ".";
    for (int64_t j = 0; j < layers; ++j) {
      const std::string in = "input_blocks." + to_string((layers + 1) * i + j + 1) + ".";
      add(in + "0.", d + "resnets." + to_string(j) + ".", &kUnetResnet);
      if (has_attention(down[i])) add(in + "1.", d + "attentions." + to_string(j) + ".");
    }
    if (i < n - 1) add("input_blocks." + to_string((layers + 1) * (i + 1)) + ".0.op.", d + "downsamplers.0.conv.");

    const std::string u = "up_blocks." + to_string(i) + ".";
    for (int64_t j = 0; j < layers + 1; ++j) {
      const std::string out = "output_blocks." + to_string((layers + 1) * i + j) + ".";
      add(out + "0.", u + "resnets." + to_string(j) + ".", &kUnetResnet);
      if (has_attention(up[i])) add(out + "1.", u + "attentions." + to_string(j) + ".");
    }
    if (i < n - 1)
      add("output_blocks." + to_string((layers + 1) * i + layers) + "." + (has_attention(up[i]) ? "2" : "1") + ".conv.",
          u + "upsamplers.0.conv.");
  }

  const json mid = config.contains("mid_block_type") ? config["mid_block_type"] : json("UNetMidBlock2DCrossAttn");
  if (!mid.is_null()) {
    if (mid != "UNetMidBlock2DCrossAttn") throw Error("unet config: mid_block_type " + mid.dump() + " is not supported");
    add("middle_block.0.", "mid_block.resnets.0.", &kUnetResnet);
    add("middle_block.1.", "mid_block.attentions.0.");
    add("middle_block.2.", "mid_block.resnets.1.", &kUnetResnet);
  }
  return t;
}

namespace {

// first_stage_model.*: the original numbers decoder levels from the lowest resolution up, diffusers in
// the order they run.
ComponentTable vae_table(const json& config) {
  ComponentTable t{"vae", "first_stage_model.", {}, nullptr};
  auto add = [&t](std::string original, std::string diffusers, const std::vector<Leaf>* leaves = nullptr) {
    t.rules.push_back({std::move(original), std::move(diffusers), leaves});
  };
  const int64_t n = static_cast<int64_t>(config.at("block_out_channels").size());
  const int64_t layers = single_int(config, "layers_per_block", "vae");

  for (const std::string coder : {"encoder.", "decoder."}) {
    add(coder + "conv_in.", coder + "conv_in.");
    add(coder + "conv_out.", coder + "conv_out.");
    add(coder + "norm_out.", coder + "conv_norm_out.");
    add(coder + "mid.block_1.", coder + "mid_block.resnets.0.", &kVaeResnet);
    add(coder + "mid.block_2.", coder + "mid_block.resnets.1.", &kVaeResnet);
    if (config.value("mid_block_add_attention", true))
      add(coder + "mid.attn_1.", coder + "mid_block.attentions.0.", &kVaeAttention);
  }
  add("quant_conv.", "quant_conv.");
  add("post_quant_conv.", "post_quant_conv.");
  for (int64_t i = 0; i < n; ++i) {
    const std::string down = "encoder.down." + to_string(i) + ".";
    const std::string d = "encoder.down_blocks." + to_string(i) + ".";
    for (int64_t j = 0; j < layers; ++j) add(down + "block." + to_string(j) + ".", d + "resnets." + to_string(j) + ".", &kVaeResnet);
    if (i < n - 1) add(down + "downsample.", d + "downsamplers.0.");

    const std::string up = "decoder.up." + to_string(n - 1 - i) + ".";
    const std::string u = "decoder.up_blocks." + to_string(i) + ".";
    for (int64_t j = 0; j < layers + 1; ++j) add(up + "block." + to_string(j) + ".", u + "resnets." + to_string(j) + ".", &kVaeResnet);
    if (i < n - 1) add(up + "upsample.", u + "upsamplers.0.");
  }
  return t;
}

// OpenAI CLIP as transformers saves it (SD1 `cond_stage_model.transformer.`, SDXL's first encoder): the
// names are already diffusers' own.
ComponentTable clip_table(const std::string& component, const std::string& prefix) {
  ComponentTable t{component, prefix, {{"text_model.", "text_model."}}, nullptr};
  t.ignored = [](const std::string& name) { return name == "text_model.embeddings.position_ids"; };
  return t;
}

// open_clip's text tower (SD2 `cond_stage_model.model.`, SDXL `conditioner.embedders.1.model.`). SD2 uses
// the penultimate layer, so diffusers keeps 23 of 24 layers and no projection.
ComponentTable open_clip_table(const std::string& component, const std::string& prefix, const json& config) {
  const int64_t layers = config.at("num_hidden_layers").get<int64_t>();
  const auto arch = config.value("architectures", json::array());
  const bool projection = std::find(arch.begin(), arch.end(), "CLIPTextModelWithProjection") != arch.end();
  ComponentTable t{component, prefix, {}, nullptr};
  t.rules.push_back({"positional_embedding", "text_model.embeddings.position_embedding.weight"});
  t.rules.push_back({"token_embedding.weight", "text_model.embeddings.token_embedding.weight"});
  t.rules.push_back({"ln_final.", "text_model.final_layer_norm."});
  if (projection) t.rules.push_back({"text_projection", "text_projection.weight", nullptr, Transform::Transpose});
  for (int64_t k = 0; k < layers; ++k)
    t.rules.push_back({"transformer.resblocks." + to_string(k) + ".", "text_model.encoder.layers." + to_string(k) + ".",
                       &kOpenClipLayer});
  t.ignored = [layers, projection](const std::string& name) {
    if (name == "logit_scale" || name == "attn_mask" || (!projection && name == "text_projection")) return true;
    const std::string blocks = "transformer.resblocks.";
    if (!starts_with(name, blocks)) return false;
    try {
      return std::stoll(name.substr(blocks.size())) >= layers;  // layers diffusers does not keep
    } catch (const std::exception&) {
      return false;
    }
  };
  return t;
}

}  // namespace

std::vector<ComponentTable> family_tables(Family family, const std::map<std::string, json>& configs) {
  std::vector<ComponentTable> tables;
  tables.push_back(unet_table(config_of(configs, "unet")));
  tables.push_back(vae_table(config_of(configs, "vae")));
  switch (family) {
    case Family::SD1:
      tables.push_back(clip_table("text_encoder", "cond_stage_model.transformer."));
      break;
    case Family::SD2:
      tables.push_back(open_clip_table("text_encoder", "cond_stage_model.model.", config_of(configs, "text_encoder")));
      break;
    case Family::SDXL:
      tables.push_back(clip_table("text_encoder", "conditioner.embedders.0.transformer."));
      tables.push_back(
          open_clip_table("text_encoder_2", "conditioner.embedders.1.model.", config_of(configs, "text_encoder_2")));
      break;
  }
  return tables;
}

std::vector<Target> to_diffusers(const ComponentTable& table, const std::string& name) {
  const Rule* best = nullptr;
  for (const auto& rule : table.rules) {
    const bool match = ends_with_dot(rule.original) ? starts_with(name, rule.original) : name == rule.original;
    if (match && (!best || rule.original.size() > best->original.size())) best = &rule;
  }
  if (!best) return {};
  if (!ends_with_dot(best->original)) return {{best->diffusers, best->transform, 0}};
  const std::string rest = name.substr(best->original.size());
  if (!best->leaves) return {{best->diffusers + rest, Transform::None, 0}};
  for (const auto& leaf : *best->leaves) {
    if (leaf.original != rest) continue;
    std::vector<Target> targets;
    for (size_t i = 0; i < leaf.diffusers.size(); ++i)
      targets.push_back({best->diffusers + leaf.diffusers[i], leaf.transform, static_cast<int>(i)});
    return targets;
  }
  return {};
}

std::optional<Source> to_original(const ComponentTable& table, const std::string& name) {
  const Rule* best = nullptr;
  for (const auto& rule : table.rules) {
    const bool match = ends_with_dot(rule.diffusers) ? starts_with(name, rule.diffusers) : name == rule.diffusers;
    if (match && (!best || rule.diffusers.size() > best->diffusers.size())) best = &rule;
  }
  if (!best) return std::nullopt;
  if (!ends_with_dot(best->diffusers)) return Source{best->original, best->transform, 0, {}};
  const std::string rest = name.substr(best->diffusers.size());
  if (!best->leaves) return Source{best->original + rest, Transform::None, 0, {}};
  for (const auto& leaf : *best->leaves) {
    for (size_t i = 0; i < leaf.diffusers.size(); ++i) {
      if (leaf.diffusers[i] != rest) continue;
      Source source{best->original + leaf.original, leaf.transform, static_cast<int>(i), {}};
      if (leaf.transform == Transform::Chunk)
        for (const auto& part : leaf.diffusers) source.group.push_back(best->diffusers + part);
      return source;
    }
  }
  return std::nullopt;
}

}  // namespace tide::pipeline::detail
