#include "tide/pipeline/tiny_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

#include "tide/io/safetensors.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/runtime/error.h"

namespace tide::pipeline {
namespace fs = std::filesystem;
namespace {

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path);
  out << text;
  if (!out.flush()) throw Error("tiny model: cannot write " + path.string());
}

void save_module(torch::nn::Module& module, const std::filesystem::path& file) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : module.named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) tensors.emplace_back(b.key(), b.value());
  std::filesystem::create_directories(file.parent_path());
  io::write_safetensors(file, tensors);
}

// GPT-2's byte -> printable unicode character table, as UTF-8 strings.
std::vector<std::string> byte_symbols() {
  std::vector<std::string> out(256);
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    out[b] = utf8(printable ? b : 256 + extra++);
  }
  return out;
}

// Writes the folder and returns its path (`dir`).
void write_folder(const fs::path& dir, uint64_t seed) {
  // Modules draw their initial weights from the default CPU generator: seed it for this model and put
  // its state back afterwards, so the caller's random stream is untouched.
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  const at::Tensor saved_state = generator.get_state();
  struct Restore {
    at::Generator& g;
    const at::Tensor& state;
    ~Restore() { g.set_state(state); }
  } restore{generator, saved_state};
  generator.set_current_seed(seed);
  // Tokenizer: every byte symbol (with and without </w>) and the two special tokens, no merges.
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (const auto& s : byte_symbols()) vocab[s] = id++;
  for (const auto& s : byte_symbols()) vocab[s + "</w>"] = id++;
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  write_text(dir / "tokenizer/vocab.json", vocab.dump());
  write_text(dir / "tokenizer/merges.txt", "#version: 0.2\n");
  write_text(dir / "tokenizer/tokenizer_config.json",
             R"({"model_max_length": 77, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"})");

  const nlohmann::json text_config = {
      {"architectures", {"CLIPTextModel"}}, {"bos_token_id", 0}, {"eos_token_id", 2}, {"hidden_act", "quick_gelu"},
      {"hidden_size", 16}, {"intermediate_size", 24}, {"layer_norm_eps", 1e-5}, {"max_position_embeddings", 77},
      {"num_attention_heads", 2}, {"num_hidden_layers", 2}, {"projection_dim", 16}, {"vocab_size", id}};
  write_text(dir / "text_encoder/config.json", text_config.dump(2));
  models::ClipTextModel text(models::ClipTextConfig::from_json(text_config));
  {
    // Real CLIP encoders end in a layer norm with a non-zero bias. A fresh one (weight 1, bias 0) makes every
    // token's output mean 0, which A1111's prompt weighting divides by.
    at::NoGradGuard no_grad;
    auto& norm = text->text_model->final_layer_norm;
    const at::Tensor k = at::arange(norm->weight.size(0), at::kFloat);
    norm->weight.copy_(1 + 0.2 * at::sin(1.3 * k));
    norm->bias.copy_(0.1 + 0.05 * at::cos(0.7 * k));
  }
  save_module(*text, dir / "text_encoder/model.safetensors");

  const nlohmann::json unet_config = {
      {"_class_name", "UNet2DConditionModel"}, {"attention_head_dim", 2}, {"block_out_channels", {32, 64}},
      {"cross_attention_dim", 16}, {"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
      {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}}, {"in_channels", 4}, {"out_channels", 4},
      {"layers_per_block", 1}, {"norm_num_groups", 32}, {"sample_size", 16}};
  write_text(dir / "unet/config.json", unet_config.dump(2));
  models::UNet2DConditionModel unet(models::UNet2DConditionConfig::from_json(unet_config));
  save_module(*unet, dir / "unet/diffusion_pytorch_model.safetensors");

  const nlohmann::json vae_config = {
      {"_class_name", "AutoencoderKL"}, {"block_out_channels", {32, 32}},
      {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D"}},
      {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D"}}, {"in_channels", 3}, {"out_channels", 3},
      {"latent_channels", 4}, {"layers_per_block", 1}, {"norm_num_groups", 32}, {"scaling_factor", 0.18215}};
  write_text(dir / "vae/config.json", vae_config.dump(2));
  models::AutoencoderKL vae(models::AutoencoderKLConfig::from_json(vae_config));
  save_module(*vae, dir / "vae/diffusion_pytorch_model.safetensors");

  write_text(dir / "scheduler/scheduler_config.json",
             R"({"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
                 "skip_prk_steps": true, "steps_offset": 1, "timestep_spacing": "leading"})");
  write_text(dir / "model_index.json",
             R"({"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
                 "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                 "safety_checker": [null, null], "feature_extractor": [null, null]})");
}

}  // namespace

void write_tiny_pipeline(const fs::path& dir, uint64_t seed) {
  if (fs::exists(dir)) throw Error("tiny model: " + dir.string() + " already exists");
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  if (!fs::is_directory(parent)) throw Error("tiny model: folder " + parent.string() + " does not exist");
  fs::path temporary = dir;
  temporary += ".tmp-" + std::to_string(::getpid());
  try {
    write_folder(temporary, seed);
    fs::rename(temporary, dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(temporary, ec);
    throw;
  }
}

}  // namespace tide::pipeline
