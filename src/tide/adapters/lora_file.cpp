// Naming schemes after kohya-ss/sd-scripts networks/lora.py (LoRANetwork.create_modules: prefix + '.' + module
// path with '.' -> '_'; library/sdxl_model_util.py for SDXL's original-layout UNet names), diffusers'
// loaders/lora_pipeline.py (unet. / text_encoder. / text_encoder_2. + PEFT lora_A / lora_B) and LyCORIS'
// module weight lists (hada_*, lokr_*).
#include "tide/adapters/lora_file.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "tide/io/safetensors.h"
#include "tide/pipeline/single_file_tables.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::adapters {
namespace {

std::string underscored(std::string name) {
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

// Tensor name endings -> the factor they are. Matched after a '.', longest first.
const std::vector<std::pair<std::string, std::string>>& factor_suffixes() {
  static const auto list = [] {
    std::vector<std::pair<std::string, std::string>> l = {
        {"lora_down.weight", "down"}, {"lora_up.weight", "up"}, {"lora_mid.weight", "mid"},  // kohya / LoCon
        {"lora_A.weight", "down"}, {"lora_B.weight", "up"},                                  // PEFT
        {"lora_A.default.weight", "down"}, {"lora_B.default.weight", "up"},
        {"lora.down.weight", "down"}, {"lora.up.weight", "up"},  // diffusers before PEFT
        {"lora_linear_layer.down.weight", "down"}, {"lora_linear_layer.up.weight", "up"},
        {"alpha", "alpha"},
        {"hada_w1_a", "hada_w1_a"}, {"hada_w1_b", "hada_w1_b"}, {"hada_w2_a", "hada_w2_a"},
        {"hada_w2_b", "hada_w2_b"}, {"hada_t1", "hada_t1"}, {"hada_t2", "hada_t2"},
        {"lokr_w1", "lokr_w1"}, {"lokr_w1_a", "lokr_w1_a"}, {"lokr_w1_b", "lokr_w1_b"},
        {"lokr_w2", "lokr_w2"}, {"lokr_w2_a", "lokr_w2_a"}, {"lokr_w2_b", "lokr_w2_b"}, {"lokr_t2", "lokr_t2"},
        {"diff", "diff"}, {"dora_scale", "dora_scale"}};
    std::stable_sort(l.begin(), l.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    return l;
  }();
  return list;
}

// Attention processors of diffusers < 0.14 (save_attn_procs): `<attn>.processor.to_q_lora.down.weight` is
// the LoRA of `<attn>.to_q`; to_out_lora is that of to_out.0.
std::string without_processor_naming(std::string name) {
  const std::string marker = ".processor.";
  const auto at = name.find(marker);
  if (at == std::string::npos) return name;
  std::string rest = name.substr(at + marker.size());
  for (const char* proj : {"to_q", "to_k", "to_v", "to_out"}) {
    const std::string p = std::string(proj) + "_lora.";
    if (starts_with(rest, p))
      return name.substr(0, at) + "." + proj + (std::string(proj) == "to_out" ? ".0" : "") + ".lora." +
             rest.substr(p.size());
  }
  return name;
}

// (layer key, factor role) of a tensor name; role "" when it is not a LoRA tensor.
std::pair<std::string, std::string> split_factor(const std::string& name) {
  for (const auto& [suffix, role] : factor_suffixes())
    if (name.size() > suffix.size() + 1 && ends_with(name, "." + suffix))
      return {name.substr(0, name.size() - suffix.size() - 1), role};
  return {name, ""};
}

nlohmann::json table_config(const models::UNet2DConditionConfig& c) {
  nlohmann::json j;
  j["down_block_types"] = c.down_block_types;
  j["up_block_types"] = c.up_block_types;
  j["layers_per_block"] = c.layers_per_block;
  j["mid_block_type"] = c.mid_block_type.empty() ? nlohmann::json() : nlohmann::json(c.mid_block_type);
  if (c.has_text_time()) j["addition_embed_type"] = "text_time";
  return j;
}

LoraKind kind_of(const LoraLayer& layer, const std::string& where) {
  std::set<std::string> roles;
  for (const auto& [role, tensor] : layer.factors) roles.insert(role);
  auto has = [&](const char* r) { return roles.count(r) != 0; };
  auto need = [&](std::initializer_list<const char*> required, const char* kind) {
    for (const char* r : required)
      if (!has(r)) throw Error(where + ": a " + kind + " layer without its '" + r + "' tensor");
  };
  auto only = [&](std::initializer_list<const char*> allowed, const char* kind) {
    for (const auto& r : roles)
      if (std::find_if(allowed.begin(), allowed.end(), [&](const char* a) { return r == a; }) == allowed.end())
        throw Error(where + ": mixes " + kind + " tensors with a '" + r + "' tensor");
  };
  if (has("dora_scale")) throw Error(where + ": DoRA layers (dora_scale) are not supported");
  if (has("down") || has("up") || has("mid")) {
    need({"down", "up"}, "LoRA");
    only({"down", "up", "mid"}, "LoRA");
    return LoraKind::kLora;
  }
  if (has("hada_w1_a") || has("hada_w1_b") || has("hada_w2_a") || has("hada_w2_b")) {
    need({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}, "LoHa");
    only({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}, "LoHa");
    if (has("hada_t1") != has("hada_t2")) throw Error(where + ": a LoHa layer with only one of hada_t1 / hada_t2");
    return LoraKind::kLoha;
  }
  if (has("lokr_w1") || has("lokr_w1_a") || has("lokr_w2") || has("lokr_w2_a") || has("lokr_w1_b") ||
      has("lokr_w2_b")) {
    if (!has("lokr_w1")) need({"lokr_w1_a", "lokr_w1_b"}, "LoKr (w1 as two factors)");
    if (!has("lokr_w2")) need({"lokr_w2_a", "lokr_w2_b"}, "LoKr (w2 as two factors)");
    only({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}, "LoKr");
    return LoraKind::kLokr;
  }
  if (has("diff")) {
    only({"diff"}, "full-difference");
    return LoraKind::kFull;
  }
  throw Error(where + ": only an alpha, no weights");
}

}  // namespace

const char* lora_kind_name(LoraKind kind) {
  switch (kind) {
    case LoraKind::kLora: return "LoRA";
    case LoraKind::kLoha: return "LoHa";
    case LoraKind::kLokr: return "LoKr";
    case LoraKind::kFull: return "full";
  }
  return "?";
}

LoraTargets::LoraTargets(std::map<std::string, Shapes> components, const models::UNet2DConditionConfig* unet_config,
                         bool xl)
    : components_(std::move(components)), xl_(xl) {
  std::set<std::string> ambiguous;
  auto add = [&](const std::string& kohya, const std::string& component, const std::string& module) {
    auto [it, inserted] = kohya_.emplace(kohya, std::make_pair(component, module));
    if (!inserted && it->second != std::make_pair(component, module)) ambiguous.insert(kohya);
  };
  const std::map<std::string, std::string> prefixes = {
      {"unet", "lora_unet_"}, {"text_encoder", xl ? "lora_te1_" : "lora_te_"}, {"text_encoder_2", "lora_te2_"}};
  for (const auto& [component, shapes] : components_) {
    const auto prefix = prefixes.find(component);
    if (prefix == prefixes.end()) continue;
    for (const auto& [module, shape] : shapes) add(prefix->second + underscored(module), component, module);
  }
  // kohya's SDXL scripts name UNet layers as the original checkpoint does (input_blocks.4.1.proj_in, ...).
  const auto unet = components_.find("unet");
  if (unet_config && unet != components_.end()) {
    std::optional<pipeline::detail::ComponentTable> table;
    try {
      table = pipeline::detail::unet_table(table_config(*unet_config));
    } catch (const Error&) {
      // A UNet without an original layout (e.g. per-block layer counts): only diffusers names apply.
    }
    if (table)
      for (const auto& [module, shape] : unet->second)
        if (auto source = pipeline::detail::to_original(*table, module + ".weight"); source && ends_with(source->name, ".weight"))
          add("lora_unet_" + underscored(source->name.substr(0, source->name.size() - 7)), "unet", module);
  }
  for (const auto& name : ambiguous) kohya_.erase(name);  // never guess between two layers
}

LoraTargets LoraTargets::from_modules(const std::map<std::string, torch::nn::Module*>& components,
                                      const models::UNet2DConditionConfig* unet_config, bool xl) {
  std::map<std::string, Shapes> shapes;
  for (const auto& [component, module] : components) {
    if (!module) continue;
    auto& s = shapes[component];
    for (const auto& p : module->named_parameters(/*recurse=*/true)) {
      const std::string& name = p.key();
      if (p.value().dim() >= 2 && ends_with(name, ".weight"))
        s[name.substr(0, name.size() - 7)] = p.value().sizes().vec();
    }
  }
  return LoraTargets(std::move(shapes), unet_config, xl);
}

std::optional<std::pair<std::string, std::string>> LoraTargets::kohya_module(const std::string& key) const {
  auto it = kohya_.find(key);
  if (it == kohya_.end()) return std::nullopt;
  return it->second;
}

const std::vector<int64_t>* LoraTargets::weight_shape(const std::string& component, const std::string& module) const {
  auto c = components_.find(component);
  if (c == components_.end()) return nullptr;
  auto m = c->second.find(module);
  return m == c->second.end() ? nullptr : &m->second;
}

LoraFile read_lora_file(const std::filesystem::path& path, const LoraTargets& targets) {
  if (!std::filesystem::is_regular_file(path)) throw Error("LoRA file " + path.string() + " does not exist");
  if (path.extension() != ".safetensors")
    throw Error("LoRA file " + path.string() + ": only .safetensors LoRA files are supported");
  io::SafetensorsFile file(path);
  if (file.entries().empty()) throw Error("LoRA file " + path.string() + " holds no tensors");

  LoraFile out;
  out.path = path;
  std::map<std::string, size_t> index;  // layer key -> position in out.layers
  for (const auto& entry : file.entries()) {
    const std::string where = "LoRA file " + path.string() + ", tensor " + entry.name;
    const auto [key, role] = split_factor(without_processor_naming(entry.name));
    if (role.empty())
      throw Error(where + ": not a LoRA tensor (expected names ending in lora_down/lora_up/alpha, lora_A/lora_B, "
                          "hada_w*, lokr_w*)");
    if (entry.dtype != at::kFloat && entry.dtype != at::kHalf && entry.dtype != at::kBFloat16 &&
        entry.dtype != at::kDouble)
      throw Error(where + ": dtype " + io::safetensors_dtype_name(entry.dtype) + " is not a floating-point type");
    auto [it, added] = index.emplace(key, out.layers.size());
    if (added) out.layers.push_back(LoraLayer{key, "", "", LoraKind::kLora, {}, std::nullopt});
    LoraLayer& layer = out.layers[it->second];
    at::Tensor value = file.tensor(entry.name);
    if (role == "alpha") {
      if (value.numel() != 1) throw Error(where + ": an alpha must be one number, this has " + std::to_string(value.numel()));
      layer.alpha = value.to(at::kDouble).item<double>();
    } else {
      if (layer.factors.count(role)) throw Error(where + ": a second '" + role + "' tensor for layer " + key);
      layer.factors[role] = value;
    }
  }

  bool kohya = false, diffusers = false;
  for (auto& layer : out.layers) {
    const std::string where = "LoRA file " + path.string() + ", layer " + layer.key;
    layer.kind = kind_of(layer, where);
    if (starts_with(layer.key, "lora_")) {
      kohya = true;
      const auto found = targets.kohya_module(layer.key);
      if (!found) {
        const bool other_family = (targets.is_xl() && starts_with(layer.key, "lora_te_")) ||
                                  (!targets.is_xl() && (starts_with(layer.key, "lora_te1_") || starts_with(layer.key, "lora_te2_")));
        throw Error(where + ": no layer of this model has that name" +
                    (other_family ? std::string(" (a LoRA for ") + (targets.is_xl() ? "SD 1.x/2.x" : "SDXL") +
                                        "? this model is " + (targets.is_xl() ? "SDXL" : "SD 1.x/2.x") + ")"
                                  : std::string(" (a LoRA for another model?)")));
      }
      std::tie(layer.component, layer.module) = *found;
    } else {
      diffusers = true;
      std::string component, module;
      for (const char* c : {"unet.", "text_encoder.", "text_encoder_2."})
        if (starts_with(layer.key, c)) {
          component = std::string(c, std::string(c).size() - 1);
          module = layer.key.substr(component.size() + 1);
        }
      // diffusers' save_attn_procs files name UNet layers without the component.
      if (component.empty() &&
          (starts_with(layer.key, "down_blocks.") || starts_with(layer.key, "mid_block.") || starts_with(layer.key, "up_blocks."))) {
        component = "unet";
        module = layer.key;
      }
      if (component.empty())
        throw Error(where + ": the name says neither unet. nor text_encoder. (nor lora_unet_ / lora_te_)");
      if (!targets.has_component(component))
        throw Error(where + ": this model has no " + component + (component == "text_encoder_2" ? " (not SDXL?)" : "") +
                    " loaded");
      if (!targets.weight_shape(component, module))
        throw Error(where + ": " + component + " has no layer " + module + " (a LoRA for another model?)");
      layer.component = component;
      layer.module = module;
    }
  }
  out.naming = kohya && diffusers ? "mixed" : kohya ? "kohya" : "diffusers";
  return out;
}

}  // namespace tide::adapters
