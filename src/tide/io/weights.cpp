#include "tide/io/weights.h"

#include <torch/nn/module.h>

#include <set>

#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/io/torch_file.h"
#include "tide/kernels/weight_quantization.h"
#include "tide/runtime/error.h"
#include "tide/runtime/shape_string.h"

namespace tide::io {
namespace fs = std::filesystem;
namespace {

// Scales of int8 weights must be positive and finite: anything else would silently poison every image.
void check_scales(const at::Tensor& scale, const std::string& what) {
  if (!(at::isfinite(scale).all().item<bool>() && (scale > 0).all().item<bool>()))
    throw Error(what + " holds a zero, negative or non-finite scale: the quantized file is damaged");
}

}  // namespace

void WeightSource::add_file(const fs::path& file) {
  if (is_torch_zip_file(file)) {  // torch.save (.bin, .ckpt, .pt): read by the restricted unpickler
    for (auto& [name, tensor] : state_dict_tensors(load_torch_file(file), file.string())) {
      const auto sizes = tensor.sizes();
      entries_[name] = Derived{std::vector<int64_t>(sizes.begin(), sizes.end()), tensor.scalar_type(),
                               [t = tensor] { return t; }};
    }
    description_ += (description_.empty() ? "" : ", ") + file.string();
    return;
  }
  auto st = std::make_shared<SafetensorsFile>(file);  // kept alive (mapped) by the loaders below
  for (const auto& e : st->entries())
    entries_[e.name] = Derived{e.shape, e.dtype, [st, name = e.name] { return st->tensor(name); }};
  for (const auto& [key, value] : st->metadata()) metadata_[key] = value;
  description_ += (description_.empty() ? "" : ", ") + file.string();
}

void WeightSource::add_derived(const std::string& name, Derived tensor) { entries_[name] = std::move(tensor); }

WeightSource WeightSource::from_file(const fs::path& file) {
  WeightSource source;
  source.add_file(file);
  return source;
}

WeightSource WeightSource::from_component_dir(const fs::path& dir, const std::string& variant) {
  if (!fs::is_directory(dir)) throw Error("model component folder " + dir.string() + " does not exist");
  const std::string suffix = variant.empty() ? ".safetensors" : "." + variant + ".safetensors";
  const std::string bin_suffix = variant.empty() ? ".bin" : "." + variant + ".bin";
  // safetensors first; older repositories only have PyTorch .bin files (read without running their pickles).
  for (const auto& [stem, ext] : std::vector<std::pair<std::string, std::string>>{
           {"diffusion_pytorch_model", suffix}, {"model", suffix}, {"diffusion_pytorch_model", bin_suffix},
           {"pytorch_model", bin_suffix}}) {
    const fs::path single = dir / (stem + ext);
    if (fs::exists(single)) return from_file(single);
    const fs::path index = dir / (stem + ext + ".index.json");
    if (fs::exists(index)) {
      const auto json = read_json(index);
      if (!json.contains("weight_map") || !json["weight_map"].is_object())
        throw Error(index.string() + " has no weight_map");
      std::map<std::string, bool> shards;
      for (const auto& [name, file] : json["weight_map"].items()) shards[file.get<std::string>()] = true;
      WeightSource source;
      for (const auto& [file, unused] : shards) {
        if (!fs::exists(dir / file)) throw Error(index.string() + " names shard " + file + ", which is missing");
        source.add_file(dir / file);
      }
      return source;
    }
  }
  // Say what is there instead, so the user knows what to do.
  std::string found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".safetensors") != std::string::npos || name.find(".bin") != std::string::npos ||
        name.find(".ckpt") != std::string::npos)
      found += (found.empty() ? "" : ", ") + name;
  }
  std::string message = "no " + (variant.empty() ? std::string() : variant + " ") + "weights in " + dir.string() +
                        " (looked for diffusion_pytorch_model" + suffix + ", model" + suffix +
                        ", diffusion_pytorch_model" + bin_suffix + ", pytorch_model" + bin_suffix +
                        " and their .index.json)";
  if (!found.empty()) message += "; found: " + found;
  if (variant.empty() && found.find(".fp16.safetensors") != std::string::npos) message += " (try --variant fp16)";
  throw Error(message);
}

const WeightSource::Derived& WeightSource::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw Error(description() + " has no tensor '" + name + "'");
  return it->second;
}

at::Tensor WeightSource::tensor(const std::string& name) const { return entry(name).load(); }
std::vector<int64_t> WeightSource::shape(const std::string& name) const { return entry(name).shape; }
at::ScalarType WeightSource::dtype(const std::string& name) const { return entry(name).dtype; }

std::vector<std::string> WeightSource::names() const {
  std::vector<std::string> names;
  for (const auto& [name, e] : entries_) names.push_back(name);
  return names;
}

void load_module_weights(torch::nn::Module& module, const WeightSource& source, const std::string& component) {
  std::vector<std::string> missing;
  std::map<std::string, at::Tensor> buffers;  // by name: int8 weights' scale buffers are filled with them
  for (auto& item : module.named_buffers(/*recurse=*/true)) buffers.emplace(item.key(), item.value());
  std::set<std::string> filled;  // scales already set by quantizing a float weight
  auto copy_into = [&](const std::string& name, at::Tensor& target) {
    if (filled.count(name)) return;
    if (!source.contains(name)) {
      missing.push_back(name);
      return;
    }
    const auto stored = source.shape(name);
    if (at::IntArrayRef(stored) != target.sizes())
      throw Error(component + ": tensor '" + name + "' in " + source.description() + " has shape " +
                  shape_string(stored) + ", the model expects " + shape_string(target.sizes()) +
                  " (does the config.json match the weights?)");
    at::NoGradGuard no_grad;
    const bool stored_int8 = source.dtype(name) == at::kChar, wants_int8 = target.scalar_type() == at::kChar;
    const std::string scale = name + "_scale";  // nn::scale_name()
    if (wants_int8 && !stored_int8) {  // quantized as it is loaded
      auto it = buffers.find(scale);
      if (it == buffers.end()) throw Error(component + ": int8 tensor '" + name + "' has no scale buffer");
      auto quantized = kernels::quantize_per_channel(source.tensor(name), component + " tensor '" + name + "'");
      target.copy_(quantized.q);
      it->second.copy_(quantized.scale);
      filled.insert(scale);
    } else if (stored_int8 && !wants_int8) {  // an int8 file read into float (or 16-bit) storage
      if (!source.contains(scale) || source.shape(scale) != std::vector<int64_t>{target.size(0)})
        throw Error(component + ": int8 tensor '" + name + "' in " + source.description() + " has no '" + scale +
                    "' of " + std::to_string(target.size(0)) + " scales");
      const at::Tensor scales = source.tensor(scale).to(at::kFloat);
      check_scales(scales, component + " tensor '" + scale + "' in " + source.description());
      target.copy_(kernels::dequantize_per_channel(source.tensor(name), scales));
    } else {
      target.copy_(source.tensor(name));
      const bool is_scale = name.size() > 13 && name.compare(name.size() - 13, 13, ".weight_scale") == 0;
      if (is_scale && buffers.count(name)) check_scales(target, component + " tensor '" + name + "' in " + source.description());
    }
  };
  for (auto& item : module.named_parameters(/*recurse=*/true)) copy_into(item.key(), item.value());
  for (auto& item : module.named_buffers(/*recurse=*/true)) copy_into(item.key(), item.value());
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += "\n  " + missing[i];
    if (missing.size() > 8) list += "\n  ... (" + std::to_string(missing.size() - 8) + " more)";
    throw Error(component + ": " + std::to_string(missing.size()) + " tensor(s) the model needs are missing from " +
                source.description() + ":" + list);
  }
}

}  // namespace tide::io
