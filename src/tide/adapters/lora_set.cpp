#include "tide/adapters/lora_set.h"

#include <cmath>
#include <set>

#include "tide/adapters/lora_delta.h"
#include "tide/kernels/weight_quantization.h"
#include "tide/runtime/error.h"
#include "tide/runtime/strings.h"

namespace tide::adapters {
namespace {

// "component/module" -> the module's weight parameter (or, `scales`, the scale buffer of an int8 weight), for
// every loaded component.
std::map<std::string, at::Tensor> weights_by_key(const std::map<std::string, torch::nn::Module*>& components,
                                                 bool scales = false) {
  std::map<std::string, at::Tensor> weights;
  const std::string suffix = scales ? ".weight_scale" : ".weight";
  for (const auto& [component, module] : components) {
    if (!module) continue;
    for (const auto& p : scales ? module->named_buffers(/*recurse=*/true) : module->named_parameters(/*recurse=*/true)) {
      const std::string& name = p.key();
      if (ends_with(name, suffix)) weights.emplace(component + "/" + name.substr(0, name.size() - suffix.size()), p.value());
    }
  }
  return weights;
}

// Gives `weight` new storage holding `value` (in the weight's dtype and memory layout: channels last, HWIO,
// ...). New storage rather than an in-place copy: convolutions keep copies of their weight in another layout
// keyed on its address.
void replace_values(at::Tensor& weight, const at::Tensor& value) {
  at::NoGradGuard no_grad;
  at::Tensor fresh = at::empty_like(weight, at::MemoryFormat::Preserve);
  fresh.copy_(value);
  weight.set_data(fresh);
}

}  // namespace

std::map<std::string, at::Tensor> lora_deltas(const std::vector<LoraSpec>& loras, const LoraTargets& targets) {
  at::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> sums;
  for (const auto& spec : loras) {
    if (!std::isfinite(spec.weight) || !std::isfinite(spec.text_encoder_weight.value_or(0.0)))
      throw Error("LoRA file " + spec.file.string() + ": the weight must be a finite number");
    const LoraFile file = read_lora_file(spec.file, targets);
    std::set<std::string> seen;
    for (const auto& layer : file.layers) {
      const std::string where = "LoRA file " + spec.file.string() + ", layer " + layer.key;
      const std::string key = layer.component + "/" + layer.module;
      if (!seen.insert(key).second)
        throw Error(where + ": another layer of the file already changes " + layer.component + " " + layer.module);
      at::Tensor delta = lora_delta(layer, *targets.weight_shape(layer.component, layer.module), where);
      const bool text_encoder = layer.component != "unet";
      const double multiplier = text_encoder ? spec.text_encoder_weight.value_or(spec.weight) : spec.weight;
      if (multiplier != 1.0) delta = delta * multiplier;
      auto it = sums.find(key);
      if (it == sums.end()) sums.emplace(key, delta);
      else it->second = it->second + delta;
    }
  }
  return sums;
}

void LoraSet::apply(const std::vector<LoraSpec>& loras, const std::map<std::string, torch::nn::Module*>& components,
                    const models::UNet2DConditionConfig* unet_config, bool xl) {
  // Everything that can fail happens before the first weight changes.
  std::map<std::string, at::Tensor> deltas;
  if (!loras.empty()) deltas = lora_deltas(loras, LoraTargets::from_modules(components, unet_config, xl));
  auto weights = weights_by_key(components);
  for (const auto& [key, delta] : deltas)
    if (!weights.count(key)) throw Error("LoRA: no weight " + key);  // cannot happen: targets come from them

  restore(components);
  auto scales = weights_by_key(components, /*scales=*/true);
  at::NoGradGuard no_grad;
  for (const auto& [key, delta] : deltas) {
    at::Tensor& weight = weights.at(key);
    const at::Tensor base = weight.detach().clone();
    base_.emplace(key, base);
    if (weight.scalar_type() != at::kChar) {
      replace_values(weight, base.to(at::kFloat) + delta);
      continue;
    }
    // int8: merged in float32 and quantized again, with new scales (the base ones are kept to restore).
    at::Tensor& scale = scales.at(key);
    base_scale_.emplace(key, scale.detach().clone());
    auto merged = kernels::quantize_per_channel(kernels::dequantize_per_channel(base, scale) + delta, "LoRA-merged " + key);
    replace_values(weight, merged.q);
    replace_values(scale, merged.scale);
  }
  active_ = loras;
}

void LoraSet::restore(const std::map<std::string, torch::nn::Module*>& components) {
  auto weights = weights_by_key(components), scales = weights_by_key(components, /*scales=*/true);
  for (const auto& [key, base] : base_) {
    auto it = weights.find(key);
    if (it != weights.end()) replace_values(it->second, base);  // a released component has nothing to restore
  }
  for (const auto& [key, base] : base_scale_) {
    auto it = scales.find(key);
    if (it != scales.end()) replace_values(it->second, base);
  }
  base_.clear();
  base_scale_.clear();
  active_.clear();
}

}  // namespace tide::adapters
