// The loss of one training sample given its random draws, as one step of diffusers' textual_inversion.py
// computes it: latents = (mean + std·ε)·scaling_factor, noisy = add_noise(latents, noise, t), the caption
// through the text encoder with the placeholder vectors in their rows, the UNet's prediction against the
// noise (epsilon) or the velocity (v_prediction), mean squared error. Where the draws come from (keyed per
// sample position in training, stored ones in the diffusers reference test) is the caller's business.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "tide/schedulers/scheduler.h"
#include "tide/train/latent_cache.h"
#include "tide/train/training_models.h"

namespace tide::train {

struct SampleInputs {
  LatentCache::Entry moments;  // the image variant's latent distribution, float32 [1, C, h, w], not scaled
  at::Tensor latent_eps;       // [1, C, h, w] the latent sample's ε
  at::Tensor noise;            // [1, C, h, w]
  int64_t timestep = 0;
  at::Tensor ids;              // [1, 77] caption token ids
};

// Scalar float32 loss; differentiable with respect to `vectors` ([n, D], the placeholder rows starting at
// `first_id`) when autograd is on. The UNet computes in `unet_dtype` (float32, or bf16 for mixed precision).
at::Tensor sample_loss(TrainingModels& models, const schedulers::Scheduler& noise_scheduler, const at::Tensor& vectors,
                       int64_t first_id, const SampleInputs& sample, at::ScalarType unet_dtype = at::kFloat);

}  // namespace tide::train
