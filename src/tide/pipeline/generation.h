// What a text-to-image run is asked for and what it gives back.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "tide/models/autoencoder_kl.h"
#include "tide/nn/token_merging.h"
#include "tide/schedulers/scheduler.h"

namespace tide::pipeline {

// How a prompt is read. plain: as diffusers does (one 77-token window, no weights): its pictures equal
// diffusers'. a1111: as AUTOMATIC1111's webui does: `(text:1.3)` weights, `[text]`, `BREAK`, prompts of any
// length in chunks of 75 tokens (text/a1111_prompt.h).
enum class PromptSyntax { kPlain, kA1111 };

struct GenerationRequest {
  std::string prompt;
  std::optional<std::string> negative_prompt;  // none: "" (SD 1.x/2.x)
  PromptSyntax prompt_syntax = PromptSyntax::kPlain;
  // A1111's clip skip: 1 = the text encoder's last layer, 2 = the one before, ... (diffusers' clip_skip is this
  // minus one). plain: applied to the prompt only, as diffusers does; a1111: to both prompts, SD 1.x only (A1111
  // applies none to SD 2.x and SDXL).
  int clip_skip = 1;
  int width = 0;                               // 0: the model's default (unet sample_size × VAE factor)
  int height = 0;
  int steps = 50;
  double guidance = 7.5;                        // <= 1 disables classifier-free guidance
  uint64_t seed = 0;
  int num_images = 1;
  std::string scheduler;                        // CLI name; "" = the model's own scheduler
  schedulers::SchedulerOptions scheduler_options;
  // SDXL micro-conditioning (height, width pairs); 0 = diffusers' defaults: original and target size =
  // the image size, crop = (0, 0).
  int original_height = 0, original_width = 0;
  int crop_top = 0, crop_left = 0;
  int target_height = 0, target_width = 0;
  // Tiled VAE decode: auto tiles only images of more than 1 MP (models::kAutoTilingMinPixels), so the
  // default sizes decode untiled, as diffusers does.
  models::VaeTiling vae_tiling = models::VaeTiling::kAuto;
  // Token Merging (off unless tome.ratio > 0); its random choices come from a generator seeded with tome_seed,
  // or with `seed` when unset.
  nn::TokenMergingOptions tome;
  std::optional<uint64_t> tome_seed;
  // DeepCache (models/deep_cache.h): every cache_interval-th UNet call runs in full, the others reuse its deep
  // features; 1 = off.
  int cache_interval = 1;
  // Image-to-image and inpainting (pipeline/image_conditioning.h), as diffusers' Img2Img / Inpaint pipelines.
  at::Tensor init_image;          // uint8 [H, W, 3]; undefined: text-to-image
  at::Tensor mask;                // uint8 [H, W] or [H, W, 3], white = repaint; needs init_image
  std::optional<double> strength; // in (0, 1]; none: diffusers' default (SD 0.8, SDXL img2img 0.3, SDXL inpaint 0.9999)
  double mask_blur = 0;           // Gaussian blur radius (pixels) of the mask before it is binarized; 0 = none
};

// What the UNet is conditioned on for one prompt.
struct PromptEmbeddings {
  at::Tensor context;  // [1, 77, D] encoder_hidden_states
  at::Tensor pooled;   // [1, P] SDXL pooled text embedding (undefined for SD 1.x / 2.x)
};

// What the UNet is conditioned on for a whole request, in the guidance batch order [uncond × N, cond × N].
struct UNetConditioning {
  at::Tensor context;   // [B, 77, D] encoder_hidden_states
  at::Tensor pooled;    // [B, P] SDXL only
  at::Tensor time_ids;  // [B, 6] SDXL only
};

// Called after every scheduler step (index from 0) with the new latents.
struct StepInfo {
  int index;
  int total;
  double timestep;
  const at::Tensor& latents;
};
using StepCallback = std::function<void(const StepInfo&)>;

struct GenerationResult {
  at::Tensor latents;  // [N, 4, h, w] final latents, before dividing by the VAE scaling factor
  at::Tensor decoded;  // [N, 3, H, W] raw VAE output, about [-1, 1]
  at::Tensor images;   // [N, H, W, 3] uint8
  int unet_calls = 0;
};

}  // namespace tide::pipeline
