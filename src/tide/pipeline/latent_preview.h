// A picture of latents without the VAE: each latent pixel's 4 channels mapped to RGB by a fixed linear map
// fitted per VAE family (the factors ComfyUI and other front ends use for their cheap previews). For progress
// previews every step; the size is the latent's (1/8 of the image).
#pragma once
#include <ATen/ATen.h>

namespace tide::pipeline {

// latents [4, h, w] (as the scheduler holds them, scaled by the VAE's scaling factor) -> uint8 [h, w, 3].
// `xl`: SDXL's VAE (else SD 1.x / 2.x). Other channel counts are a tide::Error.
at::Tensor latent_preview_rgb8(const at::Tensor& latents, bool xl);

}  // namespace tide::pipeline
