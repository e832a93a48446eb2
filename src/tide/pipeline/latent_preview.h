// Pictures of latents mid-generation, for progress previews every step. Without a tiny autoencoder: each
// latent pixel's 4 channels mapped to RGB by a fixed linear map fitted per VAE family (the factors ComfyUI and
// other front ends use for their cheap previews), at the latent's size (1/8 of the image).
#pragma once
#include <ATen/ATen.h>

namespace tide::pipeline {

// latents [4, h, w] (as the scheduler holds them, scaled by the VAE's scaling factor) -> uint8 [h, w, 3].
// `xl`: SDXL's VAE (else SD 1.x / 2.x). Other channel counts are a tide::Error.
at::Tensor latent_preview_rgb8(const at::Tensor& latents, bool xl);

class StableDiffusionPipeline;
// The first image of `latents` [N, C, h, w] as uint8 [H, W, 3]: decoded at full size by the pipeline's tiny
// autoencoder where one is set (as A1111's TAESD live previews; a small fraction of a UNet step), else
// latent_preview_rgb8 at the latent's size.
at::Tensor step_preview_rgb8(StableDiffusionPipeline& pipe, const at::Tensor& latents);

}  // namespace tide::pipeline
