// LoRA files: which layer of which model component each group of tensors changes, for the naming schemes
// in use — kohya-ss / A1111 (`lora_unet_…`, `lora_te_…`, SDXL `lora_te1_` / `lora_te2_`, UNet names in the
// diffusers or the original SGM layout), diffusers / PEFT (`unet.<path>.lora_A.weight`, old `lora.down`)
// and LyCORIS LoHa / LoKr — read from a .safetensors file into factors and an alpha per layer.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tide/models/unet2d_condition_config.h"

namespace tide::adapters {

// How a layer's delta is made from its factors (lora_delta.h).
enum class LoraKind {
  kLora,  // up @ down (LoCon: also 3x3 convolutions, optional Tucker lora_mid)
  kLoha,  // (w1_a @ w1_b) * (w2_a @ w2_b), LyCORIS LoHa
  kLokr,  // kron(w1, w2), LyCORIS LoKr
  kFull,  // the stored difference itself (LyCORIS "full": `.diff`)
};
const char* lora_kind_name(LoraKind kind);

// One layer a LoRA file changes.
struct LoraLayer {
  std::string key;        // its name in the file, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
  std::string component;  // "unet", "text_encoder" or "text_encoder_2"
  std::string module;     // the module's path in the component, e.g. down_blocks.0.attentions.0.proj_in
  LoraKind kind = LoraKind::kLora;
  // By role: "down", "up", "mid" (LoRA), "hada_w1_a", ..., "lokr_w1", ..., "diff"; as stored (any float dtype).
  std::map<std::string, at::Tensor> factors;
  std::optional<double> alpha;
};

// The layers a LoRA may change: for each component, the modules that have a weight of 2 or more
// dimensions (linear, convolution) and its shape, and the kohya names of them all.
class LoraTargets {
 public:
  using Shapes = std::map<std::string, std::vector<int64_t>>;  // module path -> weight shape

  // `unet_config`, when given, adds the kohya names in the original layout (lora_unet_input_blocks_…).
  LoraTargets(std::map<std::string, Shapes> components, const models::UNet2DConditionConfig* unet_config, bool xl);
  // From the modules of a loaded model (component name -> root module; null ones are left out).
  static LoraTargets from_modules(const std::map<std::string, torch::nn::Module*>& components,
                                  const models::UNet2DConditionConfig* unet_config, bool xl);

  // (component, module) of a kohya layer name, if some module has it.
  std::optional<std::pair<std::string, std::string>> kohya_module(const std::string& key) const;
  // The weight shape of a module, if the component has it.
  const std::vector<int64_t>* weight_shape(const std::string& component, const std::string& module) const;
  bool has_component(const std::string& component) const { return components_.count(component) != 0; }
  bool is_xl() const { return xl_; }

 private:
  std::map<std::string, Shapes> components_;
  std::map<std::string, std::pair<std::string, std::string>> kohya_;
  bool xl_;
};

struct LoraFile {
  std::filesystem::path path;
  std::string naming;  // "kohya" or "diffusers", for messages
  std::vector<LoraLayer> layers;
};

// Reads a LoRA .safetensors file and finds the layer of every tensor group among `targets`. Every tensor
// must be understood and every layer found, else tide::Error naming the file and the tensor.
LoraFile read_lora_file(const std::filesystem::path& path, const LoraTargets& targets);

}  // namespace tide::adapters
