// Image-to-image and inpainting, prepared the way diffusers' StableDiffusion(XL)Img2ImgPipeline and
// StableDiffusion(XL)InpaintPipeline prepare them (0.35): image and mask preprocessing, the strength
// slicing of the schedule, the VAE encodes and noise draws in the generator's order, and what every
// denoising step adds (the 9-channel UNet input, the 4-channel mask blend).
#pragma once
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "tide/models/autoencoder_kl.h"
#include "tide/pipeline/generation.h"
#include "tide/schedulers/scheduler.h"

namespace tide::pipeline {

// diffusers' default strength: SD 0.8; SDXL img2img 0.3, SDXL inpaint 0.9999 (the first timestep skipped).
double default_strength(bool xl, bool inpaint);

// VaeImageProcessor.preprocess of an RGB image: resized to width x height with Pillow's Lanczos when its
// size differs, then /255, *2-1. uint8 [H, W, 3] -> float [1, 3, height, width] in [-1, 1].
at::Tensor preprocess_image(const at::Tensor& rgb8, int width, int height);

// The mask processor's preprocess: resized like the image (per channel), converted to Pillow's "L"
// (R*299/1000 + G*587/1000 + B*114/1000 in its fixed point), optionally blurred (`blur_radius` > 0:
// Pillow's GaussianBlur), /255, binarized at 0.5 (127 -> 0, 128 -> 1).
// uint8 [H, W] or [H, W, 1|3] -> float [1, 1, height, width] in {0, 1}.
at::Tensor preprocess_mask(const at::Tensor& mask8, int width, int height, double blur_radius = 0);

// For a request with an init image: checks image, mask and strength (tide::Error) and fills the
// defaults: img2img output size = the init image size rounded down to a multiple of the VAE factor
// (diffusers' img2img pipelines have no size arguments); inpainting keeps the pipeline's default size
// (unet sample_size x factor), as diffusers does; strength as default_strength(). A 9-channel
// (inpainting) UNet needs an init image and a mask.
void resolve_image_inputs(GenerationRequest& r, int vae_scale_factor, bool xl, int64_t unet_in_channels);

// The first timestep index of a run at `strength`: t_start * order with init_timestep =
// min(int(steps * strength), steps), t_start = steps - init_timestep (diffusers' get_timesteps).
size_t first_timestep_index(int steps, double strength, int scheduler_order);

// Where the denoising loop starts and what its steps need besides the latents.
struct DenoiseStart {
  size_t first = 0;               // index into scheduler.timesteps() of the first UNet call
  at::Tensor latents;             // [N, 4, h, w] latents entering the loop
  at::Tensor init_image;          // [1, 3, H, W] preprocessed init image
  at::Tensor image_latents;       // [N, 4, h, w] scaled clean latents (undefined when never encoded)
  at::Tensor noise;               // [N, 4, h, w] the pipeline's noise draw
  at::Tensor mask_condition;      // [1, 1, H, W] binarized mask (inpainting)
  at::Tensor masked_image;        // [1, 3, H, W] init image with the repainted pixels at 0
  at::Tensor mask_latents;        // [N, 1, h, w] mask at latent size (nearest)
  at::Tensor masked_image_latents;  // [N, 4, h, w] scaled latents of masked_image
  bool concat_mask = false;       // 9-channel UNet: [latents, mask, masked image latents] in
  bool blend_mask = false;        // 4-channel inpainting: keep the unmasked latents after each step

  // The UNet input from the scaled latents (the guidance batch when `guided`): [B, 4 | 9, h, w].
  at::Tensor unet_input(const at::Tensor& scaled_latents, bool guided) const;
  // After scheduler.step for timesteps()[i]: 4-channel inpainting puts back the init latents, noised to
  // timesteps()[i + 1] (the clean ones after the last step), where the mask is 0.
  at::Tensor after_step(const schedulers::Scheduler& scheduler, const at::Tensor& latents, size_t i) const;
};

// Preprocesses the request's init image (and mask), slices the schedule by strength (set_begin_index on
// `scheduler`, after its set_timesteps) and draws from `generator` in diffusers' order: img2img
// [image encode, noise]; inpainting 4-channel [image encode, noise, masked image encode]; 9-channel
// [image encode (strength < 1 only), noise, masked image encode]. `r` must be resolved.
DenoiseStart prepare_image_start(const GenerationRequest& r, schedulers::Scheduler& scheduler,
                                 models::AutoencoderKL& vae, int64_t unet_in_channels, at::Generator& generator);

}  // namespace tide::pipeline
