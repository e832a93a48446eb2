// Attention as diffusers' `Attention` module (models/attention_processor.py) runs it with the default
// processor: q/k/v projections, multi-head scaled dot-product attention, output projection; optionally a
// GroupNorm over spatial input and a residual connection (the VAE mid-block attention).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include "tide/nn/layers.h"

namespace tide::nn {

// softmax(q·kᵀ / √d) · v.  q [B, H, Lq, d], k and v [B, H, Lk, d] -> [B, H, Lq, d].
// The one place attention is computed, so that a faster kernel can replace it. `upcast`: scores and
// softmax in float32 whatever the input dtype (diffusers' upcast_attention / upcast_softmax).
// `half_products`: the blocked kernel may multiply in float16 (kernels::blocked_attention).
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        bool upcast = false, bool half_products = false);

struct AttentionOptions {
  int64_t query_dim = 0;
  int64_t cross_attention_dim = 0;  // 0: self-attention (keys and values from the query input)
  int64_t heads = 8;
  int64_t dim_head = 64;
  bool bias = false;      // to_q / to_k / to_v bias
  bool out_bias = true;   // to_out.0 bias
  bool upcast = false;    // float32 scores and softmax
  int64_t norm_num_groups = 0;  // > 0: `group_norm` over the channels before the projections
  double norm_eps = 1e-5;
  bool residual_connection = false;  // output += input
  double rescale_output_factor = 1.0;
};

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const AttentionOptions& options);

  // hidden [B, L, C] (or [B, C, H, W]: flattened to H·W tokens and restored), context [B, Lk, Ckv] for
  // cross-attention or undefined for self-attention -> same shape as hidden.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& context = {});

  // Self-attention of norm(x), x [B, L, C] float32, in training against frozen weights (nn/frozen_training.h;
  // a plain self-attention: no group norm, residual or rescaling): keeps x and the attention's output only, and
  // the backward computes norm(x), q, k and v again (kernels::blocked_attention_recomputing_inputs). Where
  // that cannot run (blocked_attention off, not float32), forward(norm(x)).
  at::Tensor forward_recomputing_projections(const at::Tensor& x, LayerNorm norm);

  const AttentionOptions& options() const { return options_; }

  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // ["0"] = output Linear (diffusers' ["1"] is a parameterless Dropout)
  GroupNorm group_norm{nullptr};

 private:
  AttentionOptions options_;
  Linear out_proj_{nullptr};  // = to_out[0]
};
TORCH_MODULE(Attention);

}  // namespace tide::nn
