#include "tide/train/latent_cache.h"

#include <ATen/record_function.h>

#include <chrono>

namespace tide::train {

LatentCache::LatentCache(models::AutoencoderKL vae, const TrainingImages& images, bool enabled)
    : vae_(std::move(vae)), images_(images), enabled_(enabled) {}

LatentCache::Entry LatentCache::encode(int image, bool flip) {
  at::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  ++encoder_runs_;
  const at::Tensor pixels = images_.pixels(image, flip);
  RECORD_USER_SCOPE("stage:vae_encoder");  // a stage of `tide train-ti --profile`
  // The VAE computes in float32 (its weights may be stored narrower, --weights).
  const auto moments = vae_->encode(pixels.to(at::kFloat));
  Entry entry{moments.mean.to(at::kFloat), moments.std().to(at::kFloat)};
  encoder_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return entry;
}

LatentCache::Entry LatentCache::get(int image, bool flip) {
  if (!enabled_) return encode(image, flip);
  const auto key = std::make_pair(image, flip);
  auto it = cache_.find(key);
  if (it == cache_.end()) it = cache_.emplace(key, encode(image, flip)).first;
  return it->second;
}

std::vector<int64_t> LatentCache::latent_shape() const {
  const auto& c = vae_->config();
  const int64_t size = images_.resized(0).size(0) / c.scale_factor();
  return {c.latent_channels, size, size};
}

}  // namespace tide::train
