// The models a benchmark runs: a built-in architecture preset with cheap pseudo-random weights (no
// download), or a diffusers folder loaded like `tide generate` loads it.
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tide/models/autoencoder_kl.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/pipeline/stable_diffusion.h"

namespace tide::bench {

struct BenchModels {
  std::string description;  // "sd15 (random weights)" or the folder
  models::ClipTextModel text_encoder{nullptr};
  models::ClipTextModel text_encoder_2{nullptr};  // SDXL only
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  nlohmann::json scheduler_config;
  bool force_zeros_for_empty_prompt = false;  // SDXL: the unconditional embeddings are zeros

  bool is_xl() const { return static_cast<bool>(text_encoder_2); }
  int vae_scale_factor() const { return static_cast<int>(vae->config().scale_factor()); }
  int default_size() const { return static_cast<int>(unet->config().sample_size) * vae_scale_factor(); }
};

// "sd15", "sd21", "sdxl" (models::presets). Weights are a fixed pseudo-random pattern scaled like
// torch's default init (norm weights 1): as fast to run as real weights, built in seconds.
BenchModels models_from_preset(const std::string& family);

// A diffusers pipeline folder.
BenchModels models_from_folder(const std::filesystem::path& folder);

}  // namespace tide::bench
