#include "tide/train/training_models.h"

#include "tide/io/atomic_file.h"
#include "tide/io/json_file.h"
#include "tide/io/safetensors.h"
#include "tide/io/weights.h"
#include "tide/models/presets.h"
#include "tide/nn/layers.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/model_source.h"
#include "tide/runtime/error.h"

namespace tide::train {
namespace fs = std::filesystem;
namespace {

void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters()) p.set_requires_grad(false);
  module.eval();
}

// The formats frozen weights train in: the int8 kernels compute no gradients, and its rounding would move them.
void require_trainable(std::optional<nn::WeightFormat> format) {
  if (format == nn::WeightFormat::kInt8)
    throw Error("textual inversion training keeps the frozen weights in f32, f16 or bf16, not int8");
}

// Stores the Linear and Conv2d weights of `component` as `format` says (values converted when `loaded`).
void store_weights(torch::nn::Module& module, const std::string& component, std::optional<nn::WeightFormat> format,
                   bool loaded) {
  if (!format) return;
  auto format_of = [&](const std::string& layer) { return nn::storage_for_layer(*format, component, layer); };
  if (loaded) nn::convert_weight_storage(module, format_of);
  else nn::set_weight_storage(module, format_of);
}

void write_json(const fs::path& path, const nlohmann::json& json) { io::write_file_atomically(path, json.dump(2) + "\n"); }

// A component folder: config.json and the module's parameters and buffers as safetensors.
void write_module(const torch::nn::Module& module, const nlohmann::json& config, const fs::path& dir, const std::string& file) {
  fs::create_directories(dir);
  write_json(dir / "config.json", config);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : module.named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) tensors.emplace_back(b.key(), b.value());
  io::write_safetensors(dir / file, tensors, {{"format", "pt"}});
}

void copy_folder_files(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& entry : fs::directory_iterator(from))
    if (entry.is_regular_file()) fs::copy(entry.path(), to / entry.path().filename(), fs::copy_options::overwrite_existing);
}

}  // namespace

void TrainingModels::load_unet() {
  if (!unet_loader) return;
  unet = unet_loader();
  unet_loader = nullptr;
}

TrainingModels load_training_models(const std::string& model, const pipeline::LoadOptions& options,
                                    UnetLoading unet_loading) {
  require_trainable(options.weights);
  auto parts = std::make_shared<pipeline::PipelineParts>(pipeline::model_parts(model, options));
  if (parts->configs.count("text_encoder_2"))
    throw Error(parts->description + ": textual inversion training supports SD 1.x / 2.x pipelines, not SDXL");
  nn::NoInitGuard no_init;  // every parameter is loaded right after it is built
  TrainingModels m;
  m.folder = parts->folder;
  m.scheduler_config = parts->configs.at("scheduler");
  m.unet_config = parts->configs.at("unet");
  m.vae_config = parts->configs.at("vae");
  m.tokenizer = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(parts->tokenizer_dir));
  m.text_encoder_config = parts->configs.at("text_encoder");
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(m.text_encoder_config));
  store_weights(*m.text_encoder, "text_encoder", options.weights, false);
  io::load_module_weights(*m.text_encoder, parts->weights.at("text_encoder"), "text_encoder");
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(m.vae_config));
  store_weights(*m.vae, "vae", options.weights, false);
  io::load_module_weights(*m.vae, parts->weights.at("vae"), "vae");
  m.vae_scaling_factor = m.vae->config().scaling_factor;
  m.tokenizer_dir = parts->tokenizer_dir;
  freeze(*m.text_encoder);
  freeze(*m.vae);
  m.unet_loader = [parts, weights = options.weights] {
    nn::NoInitGuard no_init;
    models::UNet2DConditionModel unet(models::UNet2DConditionConfig::from_json(parts->configs.at("unet")));
    store_weights(*unet, "unet", weights, false);
    io::load_module_weights(*unet, parts->weights.at("unet"), "unet");
    freeze(*unet);
    return unet;
  };
  if (unet_loading == UnetLoading::kNow) m.load_unet();
  return m;
}

TrainingModels random_training_models(const std::string& preset, const fs::path& tokenizer_dir, uint64_t seed,
                                      std::optional<nn::WeightFormat> weights, UnetLoading unet_loading) {
  require_trainable(weights);
  TrainingModels m;
  m.tokenizer = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::from_folder(tokenizer_dir));
  m.tokenizer_dir = tokenizer_dir;
  m.text_encoder_config = models::presets::preset_config(preset, "text_encoder");
  m.text_encoder_config["vocab_size"] = m.tokenizer->vocab_size();
  m.unet_config = models::presets::preset_config(preset, "unet");
  m.vae_config = models::presets::preset_config(preset, "vae");
  m.scheduler_config = models::presets::preset_config(preset, "scheduler");
  // Each component stored narrower right after it is built, so that no two are ever float32 at once.
  at::manual_seed(seed);
  m.text_encoder = models::ClipTextModel(models::ClipTextConfig::from_json(m.text_encoder_config));
  store_weights(*m.text_encoder, "text_encoder", weights, true);
  at::manual_seed(seed + 2);
  m.vae = models::AutoencoderKL(models::AutoencoderKLConfig::from_json(m.vae_config));
  store_weights(*m.vae, "vae", weights, true);
  m.vae_scaling_factor = m.vae->config().scaling_factor;
  freeze(*m.text_encoder);
  freeze(*m.vae);
  m.unet_loader = [config = m.unet_config, seed, weights] {
    at::manual_seed(seed + 1);
    models::UNet2DConditionModel unet(models::UNet2DConditionConfig::from_json(config));
    store_weights(*unet, "unet", weights, true);
    freeze(*unet);
    return unet;
  };
  if (unet_loading == UnetLoading::kNow) m.load_unet();
  return m;
}

void export_full_pipeline(const fs::path& source, const fs::path& output_dir, const TrainingModels& models,
                          const std::vector<std::pair<std::string, int64_t>>& added_tokens) {
  fs::create_directories(output_dir);
  const fs::path tok_out = output_dir / "tokenizer";
  if (source.empty()) {
    // No folder to copy (a single file, random weights): the components are written from the models.
    write_json(output_dir / "model_index.json",
               {{"_class_name", "StableDiffusionPipeline"},
                {"scheduler", {"diffusers", io::json_get<std::string>(models.scheduler_config, "_class_name", "PNDMScheduler")}},
                {"text_encoder", {"transformers", "CLIPTextModel"}}, {"tokenizer", {"transformers", "CLIPTokenizer"}},
                {"unet", {"diffusers", "UNet2DConditionModel"}}, {"vae", {"diffusers", "AutoencoderKL"}}});
    fs::create_directories(output_dir / "scheduler");
    write_json(output_dir / "scheduler" / "scheduler_config.json", models.scheduler_config);
    write_module(*models.unet, models.unet_config, output_dir / "unet", "diffusion_pytorch_model.safetensors");
    write_module(*models.vae, models.vae_config, output_dir / "vae", "diffusion_pytorch_model.safetensors");
    copy_folder_files(models.tokenizer_dir, tok_out);
  } else if (!fs::equivalent(source, output_dir)) {
    // Everything but the two components that change, copied byte for byte.
    for (const auto& entry : fs::directory_iterator(source)) {
      const std::string name = entry.path().filename().string();
      if (name == "tokenizer" || name == "text_encoder" || fs::equivalent(entry.path(), output_dir)) continue;
      fs::copy(entry.path(), output_dir / name, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    }
    copy_folder_files(source / "tokenizer", tok_out);
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
  write_module(*models.text_encoder, te_config, output_dir / "text_encoder", "model.safetensors");
}

}  // namespace tide::train
