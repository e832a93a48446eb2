// The VAE encoder runs once per image variant (image × flip): the latent distribution's mean and std are kept,
// and each step samples mean + std·ε with its own ε — the same in distribution and in value as re-encoding
// the image every step (the encoder is frozen and deterministic), at a fraction of the cost.
#pragma once
#include <ATen/ATen.h>

#include <map>

#include "tide/models/autoencoder_kl.h"
#include "tide/train/dataset.h"

namespace tide::train {

class LatentCache {
 public:
  struct Entry {
    at::Tensor mean, std;  // float32 [1, C, h, w], not scaled
  };
  // `enabled` false re-encodes on every call (the plain path, for measuring the cache's effect).
  LatentCache(models::AutoencoderKL vae, const TrainingImages& images, bool enabled = true);

  Entry get(int image, bool flip);
  // Whether every image is cached in both orientations (training flips at random), so that the encoder is no
  // longer needed; release_encoder() then lets it go (a later uncached get() is a tide::Error).
  bool holds_every_variant() const;
  void release_encoder();
  int encoder_runs() const { return encoder_runs_; }
  double encoder_seconds() const { return encoder_seconds_; }  // wall time spent in the encoder so far
  // [C, h, w] of one image's latent.
  std::vector<int64_t> latent_shape() const;

 private:
  Entry encode(int image, bool flip);
  models::AutoencoderKL vae_;
  const TrainingImages& images_;
  bool enabled_;
  std::vector<int64_t> latent_shape_;
  std::map<std::pair<int, bool>, Entry> cache_;
  int encoder_runs_ = 0;
  double encoder_seconds_ = 0;
};

}  // namespace tide::train
