#include "tide/pipeline/single_file.h"

#include <algorithm>
#include <set>

#include "tide/io/gguf.h"
#include "tide/io/gguf_writer.h"
#include "tide/io/safetensors.h"
#include "tide/models/presets.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/gguf_checkpoint.h"
#include "tide/pipeline/single_file_tables.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"
#include "tide/runtime/strings.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
using detail::Transform;
using nlohmann::json;

namespace {


// Tensors of real-world checkpoints that belong to no diffusers component: EMA copies, the training
// scheduler's buffers, the VAE's training loss (discriminator), SDXL's denoiser sigmas.
bool ignored_everywhere(const std::string& name) {
  static const std::set<std::string> buffers = {
      "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
      "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
      "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
      "logvar"};
  return buffers.count(name) || starts_with(name, "model_ema.") || starts_with(name, "first_stage_model.loss.") ||
         starts_with(name, "denoiser.");
}

// "model.diffusion_model (686), first_stage_model (248), ..." — what a file holds, for messages.
std::string summarize_names(const io::WeightSource& source) {
  std::map<std::string, int> groups;
  for (const auto& name : source.names()) {
    auto dot = name.find('.');
    if (dot != std::string::npos && (name.compare(0, dot, "model") == 0 || name.compare(0, dot, "conditioner") == 0 ||
                                      name.compare(0, dot, "cond_stage_model") == 0))
      dot = name.find('.', dot + 1);  // two levels where the first says little
    ++groups[dot == std::string::npos ? name : name.substr(0, dot)];
  }
  std::string s;
  int shown = 0;
  for (const auto& [group, count] : groups) {
    if (shown++ == 12) {
      s += ", ... (" + std::to_string(groups.size() - 12) + " more groups)";
      break;
    }
    s += (s.empty() ? "" : ", ") + group + " (" + std::to_string(count) + ")";
  }
  return s.empty() ? "no tensors" : s;
}

std::vector<int64_t> to_diffusers_shape(const std::vector<int64_t>& shape, Transform transform, const std::string& name) {
  switch (transform) {
    case Transform::None:
      return shape;
    case Transform::ConvToLinear:
      if (shape.size() == 4 && shape[2] == 1 && shape[3] == 1) return {shape[0], shape[1]};
      if (shape.size() == 2) return shape;  // some conversions already store them as linear weights
      break;
    case Transform::Transpose:
      if (shape.size() == 2) return {shape[1], shape[0]};
      break;
    case Transform::Chunk:
      if (!shape.empty() && shape[0] % 3 == 0) {
        auto third = shape;
        third[0] /= 3;
        return third;
      }
      break;
  }
  throw Error("tensor '" + name + "' has shape " + shape_string(shape) + ", which does not fit its diffusers counterpart");
}

at::Tensor to_diffusers_value(at::Tensor x, Transform transform, int chunk) {
  switch (transform) {
    case Transform::None:
      return x;
    case Transform::ConvToLinear:
      return x.dim() == 4 ? x.reshape({x.size(0), x.size(1)}) : x;
    case Transform::Transpose:
      return x.t().contiguous();
    case Transform::Chunk:
      return x.chunk(3, 0)[chunk].contiguous();
  }
  return x;
}

// An int8 weight's scales ("<weight>_scale", nn::scale_name) follow their weight: the same name with the suffix,
// split like it when the weight is (q/k/v stacked), otherwise unchanged (one scale per output channel survives a
// reshape, and a transposed matrix keeps its scales as a vector). The weight's name, or nullopt.
std::optional<std::string> weight_of_scale(const std::string& name) {
  static const std::string suffix = nn::scale_name("");
  if (name.size() == suffix.size() || !ends_with(name, suffix)) return {};
  return name.substr(0, name.size() - suffix.size());
}

// The diffusers tensors an original tensor becomes, scales of int8 weights included.
std::vector<detail::Target> diffusers_targets(const detail::ComponentTable& table, const std::string& name) {
  auto targets = detail::to_diffusers(table, name);
  if (!targets.empty()) return targets;
  const auto weight = weight_of_scale(name);
  if (!weight) return {};
  targets = detail::to_diffusers(table, *weight);
  for (auto& t : targets) {
    t.name = nn::scale_name(t.name);
    if (t.transform != Transform::Chunk) t.transform = Transform::None;
  }
  return targets;
}

// The original tensor a diffusers tensor comes from, scales of int8 weights included.
std::optional<detail::Source> original_source(const detail::ComponentTable& table, const std::string& name) {
  auto source = detail::to_original(table, name);
  if (source) return source;
  const auto weight = weight_of_scale(name);
  if (!weight || !(source = detail::to_original(table, *weight))) return {};
  source->name = nn::scale_name(source->name);
  if (source->transform != Transform::Chunk) source->transform = Transform::None;
  for (auto& part : source->group) part = nn::scale_name(part);
  return source;
}

json parse_metadata_config(const io::WeightSource& checkpoint, const std::string& key) {
  try {
    return json::parse(checkpoint.metadata().at(key));
  } catch (const json::exception& e) {
    throw Error(checkpoint.description() + ": metadata '" + key + "' is not valid JSON: " + e.what());
  }
}

}  // namespace

std::string family_name(Family family) {
  switch (family) {
    case Family::SD1: return "sd1";
    case Family::SD2: return "sd2";
    case Family::SDXL: return "sdxl";
  }
  return "?";
}

std::string family_preset(Family family) {
  switch (family) {
    case Family::SD1: return "sd15";
    case Family::SD2: return "sd21";
    case Family::SDXL: return "sdxl";
  }
  return "?";
}

std::vector<std::string> family_components(Family family) {
  if (family == Family::SDXL) return {"unet", "vae", "text_encoder", "text_encoder_2"};
  return {"unet", "vae", "text_encoder"};
}

Family detect_family(const io::WeightSource& checkpoint) {
  bool sd1_clip = false, open_clip = false, xl_clip = false, xl_open_clip = false, refiner = false;
  for (const auto& name : checkpoint.names()) {
    sd1_clip |= starts_with(name, "cond_stage_model.transformer.text_model.");
    open_clip |= starts_with(name, "cond_stage_model.model.");
    xl_clip |= starts_with(name, "conditioner.embedders.0.transformer.text_model.");
    xl_open_clip |= starts_with(name, "conditioner.embedders.1.model.");
    refiner |= starts_with(name, "conditioner.embedders.0.model.");
  }
  const bool unet = checkpoint.contains("model.diffusion_model.input_blocks.0.0.weight");
  const std::string where = checkpoint.description();
  if (unet && refiner)
    throw Error(where + " is an SDXL refiner checkpoint (one OpenCLIP text encoder); tide runs SDXL base models");
  if (unet && xl_clip && xl_open_clip) return Family::SDXL;
  if (unet && open_clip) return Family::SD2;
  if (unet && sd1_clip) {
    // CLIP ViT-L is 768 wide; other widths only come from files that carry their own configs.
    const std::string token = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
    if (checkpoint.contains(token) && !checkpoint.metadata().count("config.text_encoder")) {
      const auto shape = checkpoint.shape(token);
      if (shape.size() != 2 || shape[1] != 768)
        throw Error(where + " has an SD 1.x layout but its text encoder is " + shape_string(shape) +
                    " wide (SD 1.x uses CLIP ViT-L, [49408, 768]) and the file carries no config for it");
    }
    return Family::SD1;
  }
  std::string hint;
  if (checkpoint.contains("conv_in.weight") || checkpoint.contains("text_model.embeddings.token_embedding.weight"))
    hint = " (this looks like one component of a diffusers folder: give the folder instead)";
  throw Error(where + " is not a Stable Diffusion 1.x, 2.x or XL single-file checkpoint" + hint +
              ": expected model.diffusion_model.* with cond_stage_model.transformer.text_model.* (SD 1.x), "
              "cond_stage_model.model.* (SD 2.x) or conditioner.embedders.0/1.* (SDXL); found " +
              summarize_names(checkpoint));
}

std::map<std::string, json> single_file_configs(const io::WeightSource& checkpoint, Family family) {
  std::map<std::string, json> configs;
  auto components = family_components(family);
  components.push_back("scheduler");
  components.push_back("model_index");
  for (const auto& component : components) {
    const std::string key = "config." + component;
    configs[component] = checkpoint.metadata().count(key)
                             ? parse_metadata_config(checkpoint, key)
                             : models::presets::preset_config(family_preset(family), component);
  }
  // Variants of the released models (inpainting: 9 input channels) differ in the UNet's outer convolutions.
  if (!checkpoint.metadata().count("config.unet")) {
    const std::string in = "model.diffusion_model.input_blocks.0.0.weight", out = "model.diffusion_model.out.2.weight";
    if (checkpoint.contains(in) && checkpoint.shape(in).size() == 4) configs["unet"]["in_channels"] = checkpoint.shape(in)[1];
    if (checkpoint.contains(out) && checkpoint.shape(out).size() == 4) configs["unet"]["out_channels"] = checkpoint.shape(out)[0];
  }
  return configs;
}

std::map<std::string, io::WeightSource> components_from_single_file(const io::WeightSource& checkpoint, Family family) {
  return components_from_single_file(checkpoint, family, single_file_configs(checkpoint, family));
}

std::map<std::string, io::WeightSource> components_from_single_file(const io::WeightSource& checkpoint, Family family,
                                                                    const std::map<std::string, json>& configs) {
  auto source = std::make_shared<const io::WeightSource>(checkpoint);  // kept alive by the loaders
  const auto names = checkpoint.names();
  std::map<std::string, io::WeightSource> components;
  for (const auto& table : detail::family_tables(family, configs)) {
    io::WeightSource& component = components[table.component];
    component.set_description(table.component + " of " + checkpoint.description());
    for (const auto& name : names) {
      if (!starts_with(name, table.prefix)) continue;
      const std::string rest = name.substr(table.prefix.size());
      if (table.ignored && table.ignored(rest)) continue;
      for (const auto& target : diffusers_targets(table, rest)) {
        const auto shape = to_diffusers_shape(checkpoint.shape(name), target.transform, name);
        component.add_derived(target.name,
                              {shape, checkpoint.dtype(name), [source, name, t = target.transform, c = target.chunk] {
                                 return to_diffusers_value(source->tensor(name), t, c);
                               }});
      }
    }
  }
  return components;
}

std::vector<std::string> unmapped_tensors(const io::WeightSource& checkpoint, Family family,
                                          const std::map<std::string, json>& configs) {
  const auto tables = detail::family_tables(family, configs);
  std::vector<std::string> unmapped;
  for (const auto& name : checkpoint.names()) {
    if (ignored_everywhere(name)) continue;
    const detail::ComponentTable* table = nullptr;
    for (const auto& t : tables)
      if (starts_with(name, t.prefix)) table = &t;
    if (table) {
      const std::string rest = name.substr(table->prefix.size());
      if (!diffusers_targets(*table, rest).empty() || (table->ignored && table->ignored(rest))) continue;
    }
    unmapped.push_back(name);
  }
  return unmapped;
}

io::WeightSource single_file_source(Family family, const std::map<std::string, io::WeightSource>& components,
                                    const std::map<std::string, json>& configs) {
  io::WeightSource out;
  out.set_description(family_name(family) + " single file");
  for (const auto& table : detail::family_tables(family, configs)) {
    auto found = components.find(table.component);
    if (found == components.end())
      throw Error("a " + family_name(family) + " model needs a " + table.component + " component, which is missing");
    auto component = std::make_shared<const io::WeightSource>(found->second);
    std::vector<std::string> unknown;
    for (const auto& name : component->names()) {
      if (name == "text_model.embeddings.position_ids") continue;  // a buffer older transformers saved
      const auto src = original_source(table, name);
      if (!src) {
        unknown.push_back(name);
        continue;
      }
      const std::string original = table.prefix + src->name;
      auto shape = component->shape(name);
      const auto dtype = component->dtype(name);
      std::function<at::Tensor()> load;
      switch (src->transform) {
        case Transform::None:
          load = [component, name] { return component->tensor(name); };
          break;
        case Transform::ConvToLinear:
          if (shape.size() == 2) shape = {shape[0], shape[1], 1, 1};
          load = [component, name, shape] { return component->tensor(name).reshape(shape); };
          break;
        case Transform::Transpose:
          if (shape.size() != 2) throw Error(table.component + " tensor '" + name + "' is not a matrix");
          shape = {shape[1], shape[0]};
          load = [component, name] { return component->tensor(name).t().contiguous(); };
          break;
        case Transform::Chunk: {
          if (src->chunk != 0) continue;  // the q tensor stands for all three
          for (const auto& part : src->group)
            if (!component->contains(part) || component->shape(part) != shape)
              throw Error(table.component + ": '" + part + "' is missing or differs in shape from '" + name + "'");
          shape[0] *= 3;
          load = [component, group = src->group] {
            return at::cat({component->tensor(group[0]), component->tensor(group[1]), component->tensor(group[2])}, 0);
          };
          break;
        }
      }
      out.add_derived(original, {shape, dtype, load});
    }
    if (!unknown.empty()) {
      std::string list;
      for (size_t i = 0; i < unknown.size() && i < 8; ++i) list += "\n  " + unknown[i];
      if (unknown.size() > 8) list += "\n  ... (" + std::to_string(unknown.size() - 8) + " more)";
      throw Error(found->second.description() + ": " + std::to_string(unknown.size()) + " " + table.component +
                  " tensor(s) have no name in the original " + family_name(family) + " layout:" + list);
    }
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> to_single_file(Family family,
                                                                const std::map<std::string, io::WeightSource>& components,
                                                                const std::map<std::string, json>& configs) {
  const auto source = single_file_source(family, components, configs);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : source.names()) tensors.emplace_back(name, source.tensor(name));
  return tensors;
}

Family family_of_configs(const std::map<std::string, json>& configs) {
  if (configs.count("text_encoder_2")) return Family::SDXL;
  auto it = configs.find("text_encoder");
  if (it != configs.end() && it->second.value("hidden_act", std::string()) == "gelu") return Family::SD2;
  return Family::SD1;
}

SingleFileModel read_single_file(const fs::path& file) {
  const bool gguf = io::is_gguf_file(file) || file.extension() == ".gguf";  // a damaged .gguf says why in GGUF terms
  const auto checkpoint = gguf ? gguf_checkpoint(file) : io::WeightSource::from_file(file);
  SingleFileModel model;
  model.family = detect_family(checkpoint);
  model.configs = single_file_configs(checkpoint, model.family);
  model.components = components_from_single_file(checkpoint, model.family, model.configs);
  return model;
}

void write_single_file(const fs::path& file, Family family, const std::map<std::string, io::WeightSource>& components,
                       const std::map<std::string, json>& configs, std::optional<at::ScalarType> dtype,
                       std::map<std::string, std::string> metadata) {
  const auto source = single_file_source(family, components, configs);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : source.names()) {
    at::Tensor t = source.tensor(name);
    const auto weight = weight_of_scale(name);
    const bool int8_scale = weight && source.contains(*weight) && source.dtype(*weight) == at::kChar;
    if (dtype && t.is_floating_point() && !int8_scale) t = t.to(*dtype);  // scales stay float32
    tensors.emplace_back(name, std::move(t));
  }
  metadata["format"] = "pt";
  metadata["tide.family"] = family_name(family);
  for (const auto& [component, config] : configs) metadata["config." + component] = config.dump();
  io::write_safetensors(file, tensors, metadata);
}

void write_gguf_single_file(const fs::path& file, Family family, const std::map<std::string, io::WeightSource>& components,
                            const std::map<std::string, json>& configs, io::GgmlType type) {
  const auto source = single_file_source(family, components, configs);
  const io::GgmlType other_matrices = type == io::GgmlType::F32 ? io::GgmlType::F32 : io::GgmlType::F16;
  std::vector<io::GgufTensorToWrite> tensors;
  for (const auto& name : source.names()) {
    const at::Tensor t = source.tensor(name);
    if (t.scalar_type() == at::kChar)
      throw Error("'" + name + "' is stored as int8 (a tide quantize model); GGUF files here hold float or "
                  "block-quantized weights: convert the float model instead");
    io::GgmlType as = t.dim() >= 2 ? (t.size(-1) % 32 == 0 ? type : other_matrices) : io::GgmlType::F32;
    if (!t.is_floating_point()) as = t.scalar_type() == at::kLong ? io::GgmlType::I64 : io::GgmlType::I32;
    tensors.push_back({name, t, as});
  }
  std::map<std::string, std::string> metadata = {{"general.architecture", family_name(family)},
                                                 {"tide.family", family_name(family)}};
  for (const auto& [component, config] : configs) metadata["config." + component] = config.dump();
  io::write_gguf(file, tensors, metadata);
}

}  // namespace tide::pipeline
