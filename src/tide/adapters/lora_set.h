// LoRAs merged into a model's weights: W' = W + Σ multiplier · delta, computed in float32 from the base
// weight and cast to the weight's dtype. The base values of every changed weight are kept, so another set of
// LoRAs (or none) starts again from them, bit for bit.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tide/adapters/lora_file.h"

namespace tide::adapters {

// A LoRA file and its multiplier; A1111's <lora:NAME:TE:UNET> may give the text encoders another one.
struct LoraSpec {
  std::filesystem::path file;
  double weight = 1.0;
  std::optional<double> text_encoder_weight;  // unset: `weight`
};

// The deltas of a list of LoRAs, summed per weight: "component/module" -> float32 delta (multipliers
// included). Reads and checks every file first; tide::Error (naming the file and tensor) if any does not fit.
std::map<std::string, at::Tensor> lora_deltas(const std::vector<LoraSpec>& loras, const LoraTargets& targets);

class LoraSet {
 public:
  // Replaces the merged LoRAs by `loras` (empty: back to the base weights). `components`: component name ->
  // root module (null: not loaded). All-or-nothing: on a tide::Error the weights stay as they were.
  void apply(const std::vector<LoraSpec>& loras, const std::map<std::string, torch::nn::Module*>& components,
             const models::UNet2DConditionConfig* unet_config, bool xl);
  const std::vector<LoraSpec>& active() const { return active_; }

 private:
  // Puts the base values back into every weight changed so far (of the components still loaded).
  void restore(const std::map<std::string, torch::nn::Module*>& components);

  std::map<std::string, at::Tensor> base_;        // "component/module" -> the weight before any LoRA
  std::map<std::string, at::Tensor> base_scale_;  // the same for int8 weights' scales
  std::vector<LoraSpec> active_;
};

}  // namespace tide::adapters
