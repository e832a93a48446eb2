// The frozen parts of textual-inversion training, loaded from a diffusers SD 1.x / 2.x folder: tokenizer,
// text encoder, UNet, VAE (every parameter requires_grad = false, eval mode) and the scheduler config the
// DDPM noise schedule is built from. Also: writing the trained model back as a complete diffusers folder.
#pragma once
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tide/models/autoencoder_kl.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/text/clip_tokenizer.h"

namespace tide::train {

struct TrainingModels {
  std::unique_ptr<text::ClipTokenizer> tokenizer;
  models::ClipTextModel text_encoder{nullptr};
  models::UNet2DConditionModel unet{nullptr};
  models::AutoencoderKL vae{nullptr};  // let go by the trainer once every image's latents are cached
  double vae_scaling_factor = 0;       // the VAE's scaling_factor: latents = its encoder's sample × this
  nlohmann::json scheduler_config;
  nlohmann::json text_encoder_config;  // config.json as read
  nlohmann::json unet_config, vae_config;
  std::filesystem::path tokenizer_dir;  // the tokenizer files read
  std::filesystem::path folder;         // the diffusers folder they came from (empty: single file, random weights)

  // Builds and loads the UNet where loading left it for later (UnetLoading::kLater); nothing once it is there.
  void load_unet();
  std::function<models::UNet2DConditionModel()> unet_loader;  // set while the UNet is still to be loaded
};

// When the UNet's weights are read: with the rest, or at TrainingModels::load_unet(), so that the VAE can
// encode every training image first without them resident (SD 1.5 at 512 px in float32: the encoder's
// 0.9 GiB of activations on top of the UNet's 3.2 GiB made the encode the run's peak).
enum class UnetLoading { kNow, kLater };

// `model` as `tide generate` takes it: a diffusers folder, a single-file checkpoint (tokenizer from
// options.tokenizer or the family's Hub reference) or a Hub id, through pipeline::model_parts; Linear and
// Conv2d weights stored as options.weights says (unset: float32). Errors name the model and the missing or
// bad component; SDXL and int8 are refused with a clear message.
TrainingModels load_training_models(const std::string& model, const pipeline::LoadOptions& options = {},
                                    UnetLoading unet_loading = UnetLoading::kNow);

// A preset architecture ("sd15", ...) with random weights, for benchmarks; the tokenizer is read from
// `tokenizer_dir` and the text encoder's table sized to it. `weights`: Linear and Conv2d weights stored so.
// Each component draws from its own seed (seed, seed + 1, seed + 2), so loading the UNet later changes nothing.
TrainingModels random_training_models(const std::string& preset, const std::filesystem::path& tokenizer_dir,
                                      uint64_t seed = 0, std::optional<nn::WeightFormat> weights = std::nullopt,
                                      UnetLoading unet_loading = UnetLoading::kNow);

// Writes `output_dir` as a diffusers folder that loads the trained concept: every component of `source`
// copied as is (a model that is no folder: UNet, VAE and scheduler written from `models`) except the tokenizer (with the added tokens in added_tokens.json and tokenizer_config.json's
// added_tokens_decoder) and the text encoder (config vocab_size and the grown token table).
void export_full_pipeline(const std::filesystem::path& source, const std::filesystem::path& output_dir,
                          const TrainingModels& models, const std::vector<std::pair<std::string, int64_t>>& added_tokens);

}  // namespace tide::train
