#include "tide/train/training_models.h"

#include "tide/io/atomic_file.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/io/weights.h"
#include "tide/models/presets.h"
#include "tide/runtime/error.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

nlohmann::json component_config(const fs::path& folder, const std::string& component, const char* file) {
  const fs::path path = folder / component / file;
  if (!fs::exists(path)) throw Error(folder.string() + ": component '" + component + "' is missing (" + path.string() + ")");
  return io::read_json(path);
}

void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters()) p.set_requires_grad(false);
  module.eval();
}

void write_json(const fs::path& path, const nlohmann::json& json) { io::write_file_atomically(path, json.dump(2) + "\n"); }

}  // namespace

TrainingModels load_training_models(const fs::path& folder, const std::string& variant) {
  if (!fs::is_directory(folder)) throw Error("model folder " + folder.string() + " does not exist");
  if (!fs::exists(folder / "model_index.json"))
    throw Error(folder.string() + " is not a diffusers pipeline folder (no model_index.json)");
  const auto index = io::read_json(folder / "model_index.json");
  const auto cls = io::json_get<std::string>(index, "_class_name", "");
  if (cls == "StableDiffusionXLPipeline" || index.contains("text_encoder_2"))
    throw Error(folder.string() + ": textual inversion training supports SD 1.x / 2.x pipelines, not SDXL");
  TrainingModels m;
  m.folder = folder;
  m.tokenizer = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(folder / "tokenizer"));
  m.text_encoder_config = component_config(folder, "text_encoder", "config.json");
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(m.text_encoder_config));
  io::load_module_weights(*m.text_encoder, io::WeightSource::from_component_dir(folder / "text_encoder", variant),
                          "text_encoder");
  m.unet = models::UNet2DConditionModel(
      models::UNet2DConditionConfig::from_json(component_config(folder, "unet", "config.json")));
  io::load_module_weights(*m.unet, io::WeightSource::from_component_dir(folder / "unet", variant), "unet");
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(component_config(folder, "vae", "config.json")));
  io::load_module_weights(*m.vae, io::WeightSource::from_component_dir(folder / "vae", variant), "vae");
  m.scheduler_config = component_config(folder, "scheduler", "scheduler_config.json");
  freeze(*m.text_encoder);
  freeze(*m.unet);
  freeze(*m.vae);
  return m;
}

TrainingModels random_training_models(const std::string& preset, const fs::path& tokenizer_dir, uint64_t seed) {
  at::manual_seed(seed);
  TrainingModels m;
  m.tokenizer = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(tokenizer_dir));
  m.text_encoder_config = models::presets::preset_config(preset, "text_encoder");
  m.text_encoder_config["vocab_size"] = m.tokenizer->vocab_size();
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(m.text_encoder_config));
  m.unet = models::UNet2DConditionModel(models::UNet2DConditionConfig::from_json(models::presets::preset_config(preset, "unet")));
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(models::presets::preset_config(preset, "vae")));
  m.scheduler_config = models::presets::preset_config(preset, "scheduler");
  freeze(*m.text_encoder);
  freeze(*m.unet);
  freeze(*m.vae);
  return m;
}

void export_full_pipeline(const fs::path& source, const fs::path& output_dir, const TrainingModels& models,
                          const std::vector<std::pair<std::string, int64_t>>& added_tokens) {
  if (source.empty()) throw Error("--save_as_full_pipeline needs a model folder to copy (not random weights)");
  fs::create_directories(output_dir);
  const fs::path tok_out = output_dir / "tokenizer";
  if (!fs::equivalent(source, output_dir)) {
    // Everything but the two components that change, copied byte for byte.
    for (const auto& entry : fs::directory_iterator(source)) {
      const std::string name = entry.path().filename().string();
      if (name == "tokenizer" || name == "text_encoder" || fs::equivalent(entry.path(), output_dir)) continue;
      fs::copy(entry.path(), output_dir / name, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    }
    fs::create_directories(tok_out);
    for (const auto& entry : fs::directory_iterator(source / "tokenizer"))
      fs::copy(entry.path(), tok_out / entry.path().filename(), fs::copy_options::overwrite_existing);
  }
  // Tokenizer: the source files plus the added tokens, in both places transformers and tide read them.
  nlohmann::json added = fs::exists(tok_out / "added_tokens.json") ? io::read_json(tok_out / "added_tokens.json")
                                                                     : nlohmann::json::object();
  for (const auto& [token, id] : added_tokens) added[token] = id;
  write_json(tok_out / "added_tokens.json", added);
  if (fs::exists(tok_out / "tokenizer_config.json")) {
    auto config = io::read_json(tok_out / "tokenizer_config.json");
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
      for (const auto& [token, id] : added_tokens)
        config["added_tokens_decoder"][std::to_string(id)] = {{"content", token},   {"lstrip", false},
                                                               {"normalized", true}, {"rstrip", false},
                                                               {"single_word", false}, {"special", false}};
      write_json(tok_out / "tokenizer_config.json", config);
    }
  }
  // Text encoder: its config with the new vocabulary size, and all its weights.
  const fs::path te_out = output_dir / "text_encoder";
  fs::create_directories(te_out);
  nlohmann::json te_config = models.text_encoder_config;
  te_config["vocab_size"] = models.text_encoder->config().vocab_size;
  write_json(te_out / "config.json", te_config);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : models.text_encoder->named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : models.text_encoder->named_buffers()) tensors.emplace_back(b.key(), b.value());
  io::write_safetensors(te_out / "model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace tide::train
