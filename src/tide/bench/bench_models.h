// The models a benchmark runs: a built-in architecture preset with cheap pseudo-random weights (no
// download), or a diffusers folder loaded like `tide generate` loads it.
#pragma once
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tide/models/autoencoder_kl.h"
#include "tide/models/autoencoder_tiny.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/nn/weight_storage.h"
#include "tide/pipeline/stable_diffusion.h"

namespace tide::bench {

struct BenchModels {
  std::string description;  // "sd15 (random weights)" or the folder
  models::ClipTextModel text_encoder{nullptr};
  models::ClipTextModel text_encoder_2{nullptr};  // SDXL only
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};
  models::AutoencoderTiny tiny_decoder{nullptr};  // --decoder: TAESD, used where BenchSettings::tiny_decoder
  nlohmann::json scheduler_config;
  bool force_zeros_for_empty_prompt = false;  // SDXL: the unconditional embeddings are zeros
  std::string weights = "f32";                // how Linear/Conv2d weights are stored (--weights)
  // --compare-weights: the same models with their weights stored another way, for the compared side.
  std::shared_ptr<BenchModels> baseline;
  // Models loaded for one pass (defer_vae): `vae` was built without its weights (storage never written is not
  // resident) and this reads them, as tide generate's pipeline does when it first decodes. Empty otherwise.
  std::function<models::AutoencoderKL()> read_vae;

  bool is_xl() const { return static_cast<bool>(text_encoder_2); }
  int vae_scale_factor() const { return static_cast<int>(vae->config().scale_factor()); }
  int default_size() const { return static_cast<int>(unet->config().sample_size) * vae_scale_factor(); }
};

// "sd15", "sd21", "sdxl" (models::presets). Weights are a fixed pseudo-random pattern scaled like
// torch's default init (norm weights 1): as fast to run as real weights, built in seconds.
// `weights`: how Linear and Conv2d weights are stored (nn::storage_for_layer per component). `defer_vae`: the
// VAE's weights are made by BenchModels::read_vae.
BenchModels models_from_preset(const std::string& family, nn::WeightFormat weights = nn::WeightFormat::kFloat32,
                               bool defer_vae = false);

// A diffusers pipeline folder, loaded with LoadOptions::weights = `weights` (unset: as stored). `defer_vae`:
// the VAE's weights are read by BenchModels::read_vae.
BenchModels models_from_folder(const std::filesystem::path& folder, std::optional<nn::WeightFormat> weights = std::nullopt,
                               bool defer_vae = false);

// --decoder: "taesd" or "taesdxl" (diffusers' AutoencoderTiny architecture, which both share, with random
// weights built like the presets') or a diffusers AutoencoderTiny folder.
models::AutoencoderTiny tiny_decoder_from(const std::string& name_or_folder);

}  // namespace tide::bench
