// Randomness keyed by position instead of drawn from one running stream: every training sample's draws
// (caption template, flip, timestep, latent sample, noise) come from a generator seeded by
// (seed, global sample position), and each epoch's shuffle from one seeded by (seed, epoch). So the
// result does not depend on how many processes share the work, nor on where a run was stopped and resumed.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace tide::train {

// splitmix64 finalizer: a well-mixed 64-bit value from a 64-bit input.
uint64_t mix64(uint64_t x);

// A torch CPU generator seeded from (seed, stream, index); streams keep sample and shuffle draws apart.
enum class RngStream : uint64_t { sample = 1, shuffle = 2 };
at::Generator keyed_generator(uint64_t seed, RngStream stream, uint64_t index);

// The visiting order of dataset indices [0, n) in `epoch`.
std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

// What one training sample draws, in this order, from keyed_generator(seed, sample, position).
struct SampleDraws {
  int template_index = 0;
  bool flip = false;
  int64_t timestep = 0;
  at::Tensor latent_eps;  // [1, C, h, w] for sampling the latent distribution
  at::Tensor noise;       // [1, C, h, w] diffusion noise
};
SampleDraws draw_sample(uint64_t seed, uint64_t position, int num_templates, double flip_p,
                        int64_t num_train_timesteps, at::IntArrayRef latent_shape);

}  // namespace tide::train
