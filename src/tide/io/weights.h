// Weights of one model component, wherever they are stored: a diffusers component folder
// (single file, `.fp16` style variant, or shards with `*.safetensors.index.json`) — and copying
// them into a module whose parameter names equal the checkpoint's tensor names.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tide::io {

class WeightSource {
 public:
  // Finds the weights in a component folder (`unet/`, `text_encoder/`, ...): `diffusion_pytorch_model` or
  // `model`, `.safetensors` or sharded `.safetensors.index.json`, with `variant` ("fp16") if given.
  static WeightSource from_component_dir(const std::filesystem::path& dir, const std::string& variant = "");
  // All tensors of one safetensors file.
  static WeightSource from_file(const std::filesystem::path& file);

  // A tensor computed on demand (renamed, split or reshaped from another source's tensors): how
  // single-file checkpoints are presented under diffusers names.
  struct Derived {
    std::vector<int64_t> shape;
    at::ScalarType dtype;
    std::function<at::Tensor()> load;
  };
  void add_derived(const std::string& name, Derived tensor);

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  at::Tensor tensor(const std::string& name) const;  // stored dtype, CPU
  std::vector<int64_t> shape(const std::string& name) const;
  at::ScalarType dtype(const std::string& name) const;
  std::vector<std::string> names() const;
  // Where the tensors come from (for messages).
  std::string description() const { return description_.empty() ? "(no weights)" : description_; }
  void set_description(std::string text) { description_ = std::move(text); }
  // The `__metadata__` text of the safetensors file(s) read (e.g. the configs `tide convert` stores in a
  // single file); sources built by hand may set entries.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  void set_metadata(const std::string& key, std::string value) { metadata_[key] = std::move(value); }

 private:
  void add_file(const std::filesystem::path& file);
  const Derived& entry(const std::string& name) const;
  std::map<std::string, Derived> entries_;
  std::string description_;
  std::map<std::string, std::string> metadata_;
};

// Copies every parameter and buffer of `module` from `source` (same names), converting to the module's
// dtype. Tensors the module does not have are ignored (e.g. `position_ids`). Throws tide::Error naming the
// component, the tensor, the expected and the found shape, or listing the missing tensors.
void load_module_weights(torch::nn::Module& module, const WeightSource& source, const std::string& component);

}  // namespace tide::io
