// A cheap picture of latents mid-generation for progress previews: a fixed linear map from the 4 latent
// channels to RGB per model family (the "approximate cheap" preview of A1111), no VAE run.
#pragma once
#include <ATen/ATen.h>

namespace tide::server {

// latents [N, C, h, w] -> uint8 [h * upscale, w * upscale, 3] of the first image. Latents of other than 4
// channels show their channel mean as grey.
at::Tensor latent_preview(const at::Tensor& latents, bool xl, int upscale = 1);

}  // namespace tide::server
