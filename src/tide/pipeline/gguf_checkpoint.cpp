#include "tide/pipeline/gguf_checkpoint.h"

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tide/io/gguf.h"
#include "tide/pipeline/single_file.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::pipeline {
namespace {

const std::string kHfText = "transformer.text_model.";

// stable-diffusion.cpp's Hugging Face CLIP name (after `transformer.text_model.`) -> the OpenCLIP name (after
// `model.`); its open_clip_to_hf_clip tables read backwards. q/k/v projections are handled by the caller.
std::string open_clip_name(const std::string& hf) {
  static const std::map<std::string, std::string> whole = {
      {"final_layer_norm.weight", "ln_final.weight"},
      {"final_layer_norm.bias", "ln_final.bias"},
      {"embeddings.position_embedding.weight", "positional_embedding"},
      {"embeddings.token_embedding.weight", "token_embedding.weight"},
      {"text_projection", "text_projection"},
  };
  static const std::vector<std::pair<std::string, std::string>> layer = {
      {"self_attn.in_proj.weight", "attn.in_proj_weight"},
      {"self_attn.in_proj.bias", "attn.in_proj_bias"},
      {"attn.in_proj_weight", "attn.in_proj_weight"},
      {"attn.in_proj_bias", "attn.in_proj_bias"},
      {"self_attn.out_proj.", "attn.out_proj."},
      {"layer_norm1.", "ln_1."},
      {"layer_norm2.", "ln_2."},
      {"mlp.fc1.", "mlp.c_fc."},
      {"mlp.fc2.", "mlp.c_proj."},
  };
  if (auto it = whole.find(hf); it != whole.end()) return it->second;
  const std::string layers = "encoder.layers.";
  if (starts_with(hf, layers)) {
    const size_t dot = hf.find('.', layers.size());
    if (dot != std::string::npos) {
      const std::string index = hf.substr(layers.size(), dot - layers.size());
      const std::string rest = hf.substr(dot + 1);
      for (const auto& [from, to] : layer)
        if (starts_with(rest, from)) return "transformer.resblocks." + index + "." + to + rest.substr(from.size());
    }
  }
  return "";  // no OpenCLIP counterpart (e.g. position_ids): dropped
}

class Normalizer {
 public:
  explicit Normalizer(const io::WeightSource& file) {
    for (const auto& name : file.names()) {
      xl_ |= starts_with(name, "cond_stage_model.1.");
      bare_unet_ |= name == "input_blocks.0.0.weight";
    }
    // The first text encoder's width: 768 CLIP ViT-L (SD 1.x), 1024 OpenCLIP ViT-H (SD 2.x), 1280 ViT-bigG.
    const std::string norm = "cond_stage_model." + kHfText + "final_layer_norm.weight";
    const std::string token = "cond_stage_model." + kHfText + "embeddings.token_embedding.weight";
    if (file.contains(norm) && file.shape(norm).size() == 1)
      clip_width_ = file.shape(norm)[0];
    else if (file.contains(token) && file.shape(token).size() == 2)
      clip_width_ = file.shape(token)[1];
    // Other signs of a renamed OpenCLIP encoder: a fused in_proj (CLIP ViT-L has none), or a config stored
    // with the file that says so (OpenCLIP uses gelu, CLIP ViT-L quick_gelu).
    const std::string layers = "cond_stage_model." + kHfText + "encoder.layers.";
    for (const auto& name : file.names())
      open_clip_ |= starts_with(name, layers) && name.find(".self_attn.in_proj.") != std::string::npos;
    if (file.metadata().count("config.text_encoder")) {
      const auto config = nlohmann::json::parse(file.metadata().at("config.text_encoder"), nullptr, false);
      open_clip_ |= config.is_object() && config.value("hidden_act", std::string()) == "gelu";
    }
    if (clip_width_ == 1024) open_clip_ = true;
  }

  // Where OpenCLIP encoders were renamed to Hugging Face names: {GGUF prefix, original OpenCLIP prefix}.
  std::vector<std::pair<std::string, std::string>> open_clip_prefixes() const {
    if (xl_) return {{"cond_stage_model.1.", "conditioner.embedders.1.model."}};
    if (clip_width_ == 1280) return {{"cond_stage_model.", "conditioner.embedders.0.model."}};
    if (open_clip_) return {{"cond_stage_model.", "cond_stage_model.model."}};
    return {};
  }

  // The original name of a GGUF tensor ("" to drop it).
  std::string original(const std::string& name) const {
    if (bare_unet_ && !starts_with(name, "model.") && !starts_with(name, "first_stage_model.") &&
        !starts_with(name, "cond_stage_model.") && !starts_with(name, "conditioner."))
      return "model.diffusion_model." + name;
    if (starts_with(name, "diffusion_model.")) return "model." + name;
    const std::string xl_open = "cond_stage_model.1." + kHfText;
    if (starts_with(name, xl_open)) return open_clip("conditioner.embedders.1.model.", name.substr(xl_open.size()));
    const std::string clip = "cond_stage_model." + kHfText;
    if (starts_with(name, clip)) {
      const std::string rest = name.substr(clip.size());
      if (xl_) return "conditioner.embedders.0." + kHfText + rest;
      if (clip_width_ == 1280) return open_clip("conditioner.embedders.0.model.", rest);  // SDXL refiner
      if (open_clip_) return open_clip("cond_stage_model.model.", rest);                  // SD 2.x: OpenCLIP ViT-H
    }
    return name;
  }

 private:
  std::string open_clip(const std::string& prefix, const std::string& hf) const {
    for (const char* p : {"q_proj.", "k_proj.", "v_proj."})
      if (hf.find(std::string("self_attn.") + p) != std::string::npos) return "";  // stacked by the caller
    const std::string name = open_clip_name(hf);
    return name.empty() ? "" : prefix + name;
  }
  bool xl_ = false, bare_unet_ = false, open_clip_ = false;
  int64_t clip_width_ = 0;
};

// 2024 files split OpenCLIP's in_proj into q/k/v: stack them back, [3D, D] / [3D].
void add_stacked_in_proj(io::WeightSource& out, const std::shared_ptr<const io::WeightSource>& file,
                         const std::string& gguf_prefix, const std::string& original_prefix) {
  const std::string layers = gguf_prefix + kHfText + "encoder.layers.";
  for (const auto& name : file->names()) {
    if (!starts_with(name, layers)) continue;
    const size_t dot = name.find('.', layers.size());
    if (dot == std::string::npos) continue;
    const std::string rest = name.substr(dot + 1);
    for (const std::string leaf : {"weight", "bias"}) {
      if (rest != "self_attn.q_proj." + leaf) continue;
      const std::string base = name.substr(0, dot + 1) + "self_attn.";
      const std::vector<std::string> parts = {base + "q_proj." + leaf, base + "k_proj." + leaf,
                                              base + "v_proj." + leaf};
      for (const auto& p : parts)
        if (!file->contains(p)) throw Error(file->description() + " has " + name + " but not " + p);
      auto shape = file->shape(parts[0]);
      for (const auto& p : parts)
        if (file->shape(p) != shape) throw Error(file->description() + ": " + p + " differs in shape from " + parts[0]);
      if (shape.empty()) throw Error(file->description() + ": " + parts[0] + " is a scalar");
      shape[0] *= 3;
      const std::string index = name.substr(layers.size(), dot - layers.size());
      out.add_derived(original_prefix + "transformer.resblocks." + index + ".attn.in_proj_" + leaf,
                      {shape, file->dtype(parts[0]), [file, parts] {
                         return at::cat({file->tensor(parts[0]), file->tensor(parts[1]), file->tensor(parts[2])}, 0);
                       }});
    }
  }
}

// A UNet with only UNet tensors: tide needs the VAE and text encoder(s) as well.
void refuse_unet_only(const io::WeightSource& checkpoint, const std::filesystem::path& file) {
  bool unet = false, others = false;
  size_t count = 0;
  for (const auto& name : checkpoint.names()) {
    const bool u = starts_with(name, "model.diffusion_model.");
    unet |= u;
    count += u;
    others |= starts_with(name, "first_stage_model.") || starts_with(name, "cond_stage_model.") ||
              starts_with(name, "conditioner.");
  }
  if (unet && !others)
    throw Error(file.string() + " holds only a UNet (" + std::to_string(count) +
                " tensors, no VAE or text encoder); tide needs a whole Stable Diffusion checkpoint in one file "
                "(UNet, VAE and text encoders, as stable-diffusion.cpp's convert writes it)");
}

}  // namespace

io::WeightSource gguf_checkpoint(const std::filesystem::path& file) {
  auto gguf = std::make_shared<const io::WeightSource>(io::gguf_weight_source(file));
  const Normalizer normalizer(*gguf);
  io::WeightSource checkpoint;
  checkpoint.set_description(file.string());
  for (const auto& [key, value] : gguf->metadata()) checkpoint.set_metadata(key, value);
  std::map<std::string, std::string> gguf_name;  // original name -> the GGUF tensor
  for (const auto& name : gguf->names()) {
    const std::string original = normalizer.original(name);
    if (original.empty()) continue;
    if (!gguf_name.emplace(original, name).second)
      throw Error(file.string() + ": two tensors map to the checkpoint name " + original + " (one is " + name + ")");
    checkpoint.add_derived(original,
                           {gguf->shape(name), gguf->dtype(name), [gguf, name] { return gguf->tensor(name); }});
  }
  for (const auto& [gguf_prefix, original_prefix] : normalizer.open_clip_prefixes())
    add_stacked_in_proj(checkpoint, gguf, gguf_prefix, original_prefix);
  refuse_unet_only(checkpoint, file);

  // 2024 files store SD 2.x / XL's linear proj_in / proj_out as [C, C, 1, 1]: back to [C, C] where the UNet
  // config says the projections are linear.
  const Family family = detect_family(checkpoint);
  const auto configs = single_file_configs(checkpoint, family);
  if (configs.at("unet").value("use_linear_projection", false)) {
    for (const auto& name : checkpoint.names()) {
      if (!starts_with(name, "model.diffusion_model.") ||
          !(ends_with(name, ".proj_in.weight") || ends_with(name, ".proj_out.weight")))
        continue;
      const auto shape = checkpoint.shape(name);
      if (shape.size() != 4 || shape[2] != 1 || shape[3] != 1) continue;
      auto it = gguf_name.find(name);
      if (it == gguf_name.end()) continue;
      checkpoint.add_derived(name, {{shape[0], shape[1]}, checkpoint.dtype(name), [gguf, from = it->second] {
                                      return gguf->tensor(from).flatten(1);
                                    }});
    }
  }
  return checkpoint;
}

}  // namespace tide::pipeline
