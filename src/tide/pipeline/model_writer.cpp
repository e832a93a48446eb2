#include "tide/pipeline/model_writer.h"

#include <unistd.h>

#include <torch/nn/module.h>

#include <vector>

#include "tide/io/atomic_file.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

// Every parameter and buffer, by name, as held in memory (contiguous, as safetensors stores it).
std::vector<std::pair<std::string, at::Tensor>> state_of(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value().detach().contiguous());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value().detach().contiguous());
  return tensors;
}

void write_json(const fs::path& path, const nlohmann::json& value) {
  fs::create_directories(path.parent_path());
  io::write_file_atomically(path, value.dump(2) + "\n");
}

void copy_tokenizer(const fs::path& from, const fs::path& to, const std::string& pad_token) {
  if (from.empty() || !fs::exists(from / "vocab.json")) throw Error("no tokenizer (vocab.json) in " + from.string());
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from))
    if (e.is_regular_file()) fs::copy_file(e.path(), to / e.path().filename());
  if (pad_token.empty()) return;
  nlohmann::json config = fs::exists(to / "tokenizer_config.json") ? io::read_json(to / "tokenizer_config.json") : nlohmann::json::object();
  config["pad_token"] = pad_token;
  write_json(to / "tokenizer_config.json", config);
}

// The components to write, in file order; a released one is an error.
std::vector<std::pair<std::string, torch::nn::Module*>> components_of(StableDiffusionPipeline& pipe) {
  std::vector<std::pair<std::string, torch::nn::Module*>> components = {
      {"unet", pipe.unet().get()}, {"vae", pipe.vae().get()}, {"text_encoder", pipe.text_encoder().get()}};
  if (pipe.is_xl()) components.emplace_back("text_encoder_2", pipe.text_encoder_2().get());
  for (const auto& [name, module] : components)
    if (!module) throw Error("the pipeline's " + name + " was released; load the model again to write it");
  return components;
}

}  // namespace

std::map<std::string, io::WeightSource> pipeline_weights(StableDiffusionPipeline& pipe) {
  std::map<std::string, io::WeightSource> weights;
  for (const auto& [name, module] : components_of(pipe)) {
    io::WeightSource& source = weights[name];
    source.set_description("the loaded " + name);
    for (auto& [tensor_name, value] : state_of(*module))
      source.add_derived(tensor_name, {value.sizes().vec(), value.scalar_type(), [value = value] { return value; }});
  }
  return weights;
}

void write_pipeline_folder(StableDiffusionPipeline& pipe, const PipelineParts& parts, const fs::path& folder,
                           const std::map<std::string, std::string>& metadata) {
  if (fs::exists(folder)) throw Error(folder.string() + " already exists; choose a new name");
  const fs::path parent = folder.parent_path().empty() ? fs::path(".") : folder.parent_path();
  if (!fs::is_directory(parent)) throw Error("output folder " + parent.string() + " does not exist");
  fs::path tmp = folder;
  tmp += ".tmp-" + std::to_string(::getpid());
  try {
    std::map<std::string, std::string> meta = metadata;
    meta["format"] = "pt";
    const auto components = components_of(pipe);
    nlohmann::json index = {{"_class_name", parts.pipeline_class.empty() ? "StableDiffusionPipeline" : parts.pipeline_class},
                            {"scheduler", {"diffusers", "PNDMScheduler"}},
                            {"tokenizer", {"transformers", "CLIPTokenizer"}}};
    if (pipe.is_xl()) {
      index["force_zeros_for_empty_prompt"] = pipe.force_zeros_for_empty_prompt();
      index["tokenizer_2"] = {"transformers", "CLIPTokenizer"};
    }
    for (const auto& [name, module] : components) {
      const bool text = name.rfind("text_encoder", 0) == 0;
      fs::create_directories(tmp / name);
      io::write_safetensors(tmp / name / (text ? "model.safetensors" : "diffusion_pytorch_model.safetensors"),
                            state_of(*module), meta);
      write_json(tmp / name / "config.json", parts.configs.at(name));
      const char* cls = name == "unet" ? "UNet2DConditionModel" : name == "vae" ? "AutoencoderKL"
                        : name == "text_encoder" ? "CLIPTextModel" : "CLIPTextModelWithProjection";
      index[name] = {text ? "transformers" : "diffusers", cls};
    }
    write_json(tmp / "scheduler" / "scheduler_config.json", pipe.scheduler_config());
    if (parts.configs.count("scheduler")) index["scheduler"] = {"diffusers", parts.configs.at("scheduler").value("_class_name", "PNDMScheduler")};
    copy_tokenizer(parts.tokenizer_dir, tmp / "tokenizer", "");
    if (pipe.is_xl()) copy_tokenizer(parts.tokenizer_2_dir.empty() ? parts.tokenizer_dir : parts.tokenizer_2_dir, tmp / "tokenizer_2", parts.tokenizer_2_pad_token);
    write_json(tmp / "model_index.json", index);
    fs::rename(tmp, folder);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
}

}  // namespace tide::pipeline
