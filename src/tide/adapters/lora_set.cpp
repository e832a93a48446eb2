#include "tide/adapters/lora_set.h"

#include <cmath>
#include <set>

#include "tide/adapters/lora_delta.h"
#include "tide/runtime/error.h"

namespace tide::adapters {
namespace {

// "component/module" -> the module's weight parameter, for every loaded component.
std::map<std::string, at::Tensor> weights_by_key(const std::map<std::string, torch::nn::Module*>& components) {
  std::map<std::string, at::Tensor> weights;
  for (const auto& [component, module] : components) {
    if (!module) continue;
    for (const auto& p : module->named_parameters(/*recurse=*/true)) {
      const std::string& name = p.key();
      if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0)
        weights.emplace(component + "/" + name.substr(0, name.size() - 7), p.value());
    }
  }
  return weights;
}

at::MemoryFormat format_of(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

// Gives `weight` new storage holding `value` (in the weight's dtype and memory layout). New storage rather
// than an in-place copy: convolutions keep copies of their weight in the other layout keyed on its address.
void replace_values(at::Tensor& weight, const at::Tensor& value) {
  at::NoGradGuard no_grad;
  weight.set_data(value.to(weight.scalar_type()).contiguous(format_of(weight)).clone(format_of(weight)));
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
  at::NoGradGuard no_grad;
  for (const auto& [key, delta] : deltas) {
    at::Tensor& weight = weights.at(key);
    const at::Tensor base = weight.detach().clone();
    replace_values(weight, base.to(at::kFloat) + delta);
    base_.emplace(key, base);
  }
  active_ = loras;
}

void LoraSet::restore(const std::map<std::string, torch::nn::Module*>& components) {
  auto weights = weights_by_key(components);
  for (const auto& [key, base] : base_) {
    auto it = weights.find(key);
    if (it != weights.end()) replace_values(it->second, base);  // a released component has nothing to restore
  }
  base_.clear();
  active_.clear();
}

}  // namespace tide::adapters
