#include "tide/nn/timestep_embedding.h"

#include <cmath>

namespace tide::nn {

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              double downscale_freq_shift, double scale, double max_period) {
  const int64_t half = dim / 2;
  // Same float32 operations, in the same order, as diffusers' get_timestep_embedding.
  at::Tensor exponent = at::arange(0, half, timesteps.options().dtype(at::kFloat)) * (-std::log(max_period));
  exponent = exponent / (static_cast<double>(half) - downscale_freq_shift);
  at::Tensor emb = timesteps.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);  // [N, half]
  if (scale != 1.0) emb = emb * scale;
  emb = flip_sin_to_cos ? at::cat({at::cos(emb), at::sin(emb)}, -1) : at::cat({at::sin(emb), at::cos(emb)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1, 0, 0}, 0);
  return emb;  // [N, dim]
}

at::Tensor guidance_scale_embedding(const at::Tensor& w, int64_t dim) {
  const int64_t half = dim / 2;
  // float32 operations in diffusers' order: log(tensor(10000.)) / (half - 1), exp(arange · -emb).
  const at::Tensor scaled = w.to(at::kFloat) * 1000.0;  // [N]
  const at::Tensor log_base = at::log(at::scalar_tensor(10000.0, at::kFloat)) / static_cast<double>(half - 1);
  const at::Tensor freqs = at::exp(at::arange(half, at::kFloat) * -log_base);  // [half]
  const at::Tensor emb = scaled.unsqueeze(1) * freqs.unsqueeze(0);          // [N, half]
  at::Tensor out = at::cat({at::sin(emb), at::cos(emb)}, 1);                 // [N, 2·half]
  if (dim % 2 == 1) out = at::constant_pad_nd(out, {0, 1, 0, 0}, 0);
  return out;  // [N, dim]
}

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in_channels, int64_t time_embed_dim, int64_t cond_proj_dim) {
  linear_1 = register_module("linear_1", Linear(in_channels, time_embed_dim));
  linear_2 = register_module("linear_2", Linear(time_embed_dim, time_embed_dim));
  if (cond_proj_dim > 0) cond_proj = register_module("cond_proj", Linear(cond_proj_dim, in_channels, false));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x, const at::Tensor& condition) {
  at::Tensor h = x;
  if (condition.defined() && cond_proj) h = h + cond_proj->forward(condition.to(x.scalar_type()));
  return linear_2->forward(at::silu(linear_1->forward(h)));
}

}  // namespace tide::nn
