#include "tide/train/latent_cache.h"

#include <ATen/record_function.h>

#include <chrono>

#include "tide/runtime/error.h"

namespace tide::train {

LatentCache::LatentCache(models::AutoencoderKL vae, const TrainingImages& images, bool enabled)
    : vae_(std::move(vae)), images_(images), enabled_(enabled) {
  const auto& c = vae_->config();
  const int64_t size = images_.resized(0).size(0) / c.scale_factor();
  latent_shape_ = {c.latent_channels, size, size};
}

bool LatentCache::holds_every_variant() const {
  return enabled_ && cache_.size() == 2 * static_cast<size_t>(images_.num_images());
}

void LatentCache::release_encoder() {
  if (!holds_every_variant()) throw Error("the VAE encoder is still needed: not every image's latents are cached");
  vae_ = models::AutoencoderKL(nullptr);
}

LatentCache::Entry LatentCache::encode(int image, bool flip) {
  at::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  if (!vae_) throw Error("the VAE encoder was let go (release_encoder); image " + std::to_string(image) + " is not cached");
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

std::vector<int64_t> LatentCache::latent_shape() const { return latent_shape_; }

}  // namespace tide::train
