// Timestep conditioning (diffusers models/embeddings.py): the sinusoidal projection `get_timestep_embedding`
// (`Timesteps`, no parameters) and `TimestepEmbedding` (linear_1 → SiLU → linear_2).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include "tide/nn/layers.h"

namespace tide::nn {

// timesteps [N] (any real dtype; cast to float32 as diffusers does) -> [N, dim] float32:
// [sin(t·f), cos(t·f)] with f_i = exp(-ln(max_period) · i / (dim/2 - shift)), halves swapped when
// `flip_sin_to_cos`; an odd `dim` is padded with one zero column.
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, double scale = 1.0, double max_period = 10000.0);

// diffusers' get_guidance_scale_embedding (LCM pipelines): w [N] -> [N, dim] float32,
// [sin(1000·w·f), cos(1000·w·f)] with f_i = exp(-i · ln(10000) / (dim/2 - 1)); odd dims padded with a zero.
at::Tensor guidance_scale_embedding(const at::Tensor& w, int64_t dim);

class TimestepEmbeddingImpl : public torch::nn::Module {
 public:
  // cond_proj_dim > 0: a `cond_proj` Linear (no bias) maps a condition (LCM's guidance embedding) onto the
  // input, added before linear_1.
  TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim, int64_t cond_proj_dim = 0);
  // [B, in] (+ condition [B, cond_proj_dim] or undefined) -> [B, time_embed_dim]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& condition = {});

  Linear linear_1{nullptr}, linear_2{nullptr};
  Linear cond_proj{nullptr};  // null without cond_proj_dim
};
TORCH_MODULE(TimestepEmbedding);

}  // namespace tide::nn
