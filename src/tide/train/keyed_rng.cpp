#include "tide/train/keyed_rng.h"

#include <ATen/CPUGeneratorImpl.h>

namespace tide::train {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

at::Generator keyed_generator(uint64_t seed, RngStream stream, uint64_t index) {
  const uint64_t key = mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(stream)) ^ index);
  return at::make_generator<at::CPUGeneratorImpl>(key);
}

std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  at::Generator gen = keyed_generator(seed, RngStream::shuffle, static_cast<uint64_t>(epoch));
  const at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong));
  return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n);
}

SampleDraws draw_sample(uint64_t seed, uint64_t position, int num_templates, double flip_p,
                        int64_t num_train_timesteps, at::IntArrayRef latent_shape) {
  at::Generator gen = keyed_generator(seed, RngStream::sample, position);
  const auto longs = at::TensorOptions().dtype(at::kLong);
  SampleDraws d;
  d.template_index = static_cast<int>(at::randint(0, num_templates, {1}, gen, longs).item<int64_t>());
  d.flip = at::rand({1}, gen, at::TensorOptions().dtype(at::kFloat)).item<float>() < flip_p;
  d.timestep = at::randint(0, num_train_timesteps, {1}, gen, longs).item<int64_t>();
  d.latent_eps = at::randn(latent_shape, gen, at::TensorOptions().dtype(at::kFloat));
  d.noise = at::randn(latent_shape, gen, at::TensorOptions().dtype(at::kFloat));
  return d;
}

}  // namespace tide::train
