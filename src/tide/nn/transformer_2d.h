// diffusers' Transformer2DModel over continuous (image) input and its BasicTransformerBlock
// (models/transformers/transformer_2d.py, models/attention.py), as in every SD 1.x / 2.x / XL UNet:
// GroupNorm → proj_in (1x1 conv or Linear) → blocks of [self-attention, cross-attention, GEGLU MLP],
// each pre-LayerNorm with a residual → proj_out → + input.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include "tide/nn/layers.h"

#include <vector>

#include "tide/nn/attention.h"
#include "tide/nn/feed_forward.h"

namespace tide::nn {

struct Transformer2DOptions {
  int64_t channels = 0;  // in_channels = inner dim = heads · head_dim
  int64_t heads = 8;
  int64_t num_layers = 1;
  int64_t cross_attention_dim = 768;
  int64_t norm_num_groups = 32;
  bool use_linear_projection = false;
  bool upcast_attention = false;
};

// Training against frozen weights: where a block's feed-forward GEGLU projection ([B, L, 8·dim], the largest
// tensor a block keeps for its backward) holds at least this many bytes, the block keeps neither it nor the
// self-attention's q, k and v: the backward computes them again. SD 1.5 at 512 px: the 64×64 and 32×32 maps'
// blocks (projections of 42 and 21 MB); at 256 px none (recomputing every block's projection costs 11% of
// a one-thread step there).
inline constexpr int64_t kRecomputedProjectionMinBytes = int64_t{16} << 20;
// True when `block` given `h` [B, L, dim] recomputes in its backward: training against frozen weights (none of
// the block's parameters wants a gradient) on a projection of at least kRecomputedProjectionMinBytes.
bool recomputes_in_backward(const torch::nn::Module& block, const at::Tensor& h);

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim, int64_t cross_attention_dim,
                            bool upcast_attention);
  // x [B, L, dim], context [B, Lk, cross_attention_dim] -> [B, L, dim]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);

  LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  FeedForward ff{nullptr};

 private:
  at::Tensor feed_forward_recomputing_projection(const at::Tensor& h);  // h + ff(norm3(h))
};
TORCH_MODULE(BasicTransformerBlock);

class Transformer2DModelImpl : public torch::nn::Module {
 public:
  explicit Transformer2DModelImpl(const Transformer2DOptions& options);
  // x [B, C, H, W], context [B, Lk, cross_attention_dim] -> [B, C, H, W]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);

  GroupNorm norm{nullptr};
  // proj_in / proj_out: Linear with use_linear_projection, else 1x1 Conv2d (exactly one of each is set).
  Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};

 private:
  std::vector<BasicTransformerBlock> blocks_;
};
TORCH_MODULE(Transformer2DModel);

}  // namespace tide::nn
