// The Stable Diffusion text-to-image pipeline (SD 1.x / 2.x): tokenizer, text encoder, UNet, VAE
// and a scheduler, loaded from a diffusers folder, run like diffusers' StableDiffusionPipeline.
#pragma once
#include <ATen/ATen.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "tide/models/autoencoder_kl.h"
#include "tide/models/clip_text.h"
#include "tide/models/unet2d_condition.h"
#include "tide/pipeline/generation.h"
#include "tide/text/clip_tokenizer.h"

namespace tide::pipeline {

struct LoadOptions {
  std::string variant;  // "fp16": read `*.fp16.safetensors`
};

class StableDiffusionPipeline {
 public:
  // Loads every component of a diffusers folder (model_index.json, unet/, vae/, text_encoder/,
  // tokenizer/, scheduler/). Errors name the file and what is wrong.
  static std::unique_ptr<StableDiffusionPipeline> from_folder(const std::filesystem::path& folder,
                                                              const LoadOptions& options = {});

  // The text encoder's last hidden state for one prompt: [1, 77, D].
  at::Tensor encode_prompt(const std::string& prompt);
  // Initial latents: one randn [N, C, H/f, W/f] from `generator`, times the scheduler's init sigma.
  at::Tensor prepare_latents(int num_images, int height, int width, double init_noise_sigma,
                             at::Generator& generator) const;
  // Checks the request (sizes, steps, guidance) and fills the defaults; throws tide::Error.
  GenerationRequest resolve(GenerationRequest request) const;
  std::unique_ptr<schedulers::Scheduler> make_scheduler(const GenerationRequest& request) const;
  at::Tensor decode(const at::Tensor& latents);  // latents / scaling_factor -> VAE decoder

  GenerationResult generate(const GenerationRequest& request, const StepCallback& on_step = nullptr);

  int vae_scale_factor() const { return vae_->config().scale_factor(); }
  int default_size() const;
  const std::filesystem::path& folder() const { return folder_; }
  const nlohmann::json& scheduler_config() const { return scheduler_config_; }
  text::ClipTokenizer& tokenizer() { return *tokenizer_; }
  models::ClipTextModel& text_encoder() { return text_encoder_; }
  models::UNet2DConditionModel& unet() { return unet_; }
  models::AutoencoderKL& vae() { return vae_; }

 private:
  StableDiffusionPipeline() = default;
  std::filesystem::path folder_;
  std::unique_ptr<text::ClipTokenizer> tokenizer_;
  models::ClipTextModel text_encoder_{nullptr};
  models::UNet2DConditionModel unet_{nullptr};
  models::AutoencoderKL vae_{nullptr};
  nlohmann::json scheduler_config_;
};

}  // namespace tide::pipeline
