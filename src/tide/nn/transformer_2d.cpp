#include "tide/nn/transformer_2d.h"

#include "tide/nn/token_merging.h"

#include "tide/nn/checkpoint.h"
#include "tide/nn/frozen_training.h"
#include "tide/nn/in_place.h"

namespace tide::nn {

namespace {
LayerNorm layer_norm(int64_t dim) {
  return LayerNorm(dim, 1e-5);
}
}  // namespace

bool recomputes_in_backward(const torch::nn::Module& block, const at::Tensor& h) {
  const int64_t projection_bytes = h.numel() * 8 * static_cast<int64_t>(h.element_size());  // [B, L, 8·dim]
  if (projection_bytes < kRecomputedProjectionMinBytes || !trains_against_frozen(h)) return false;
  // The recomputation gives the input's gradient alone: a trainable weight would lose its own.
  for (const auto& p : block.parameters())
    if (p.requires_grad()) return false;
  return true;
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                                     int64_t cross_attention_dim, bool upcast_attention) {
  AttentionOptions self_attn;
  self_attn.query_dim = dim;
  self_attn.heads = heads;
  self_attn.dim_head = head_dim;
  self_attn.upcast = upcast_attention;
  AttentionOptions cross_attn = self_attn;
  cross_attn.cross_attention_dim = cross_attention_dim;

  norm1 = register_module("norm1", layer_norm(dim));
  attn1 = register_module("attn1", Attention(self_attn));
  norm2 = register_module("norm2", layer_norm(dim));
  attn2 = register_module("attn2", Attention(cross_attn));
  norm3 = register_module("norm3", layer_norm(dim));
  ff = register_module("ff", FeedForward(dim));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  if (TokenMerging* tome = current_token_merging()) {
    // ToMe: the tokens matched on the block's input are merged before, and copied back after, the parts asked.
    const TokenMatching m = tome->match(x);
    const auto& o = tome->options();
    auto around = [&](bool on, const at::Tensor& t, auto&& f) { return on ? m.unmerge(f(m.merge(t))) : f(t); };
    at::Tensor h = add_to_temporary(around(o.merge_attn, norm1->forward(x), [&](const at::Tensor& t) { return attn1->forward(t); }), x);
    h = add_to_temporary(around(o.merge_crossattn, norm2->forward(h), [&](const at::Tensor& t) { return attn2->forward(t, context); }), h);
    return add_to_temporary(around(o.merge_mlp, norm3->forward(h), [&](const at::Tensor& t) { return ff->forward(t); }), h);
  }
  if (recomputes_in_backward(*this, x)) {
    // Keeps x, not norm1(x), q, k and v: the backward computes them again.
    at::Tensor h = add_to_temporary(attn1->forward_recomputing_projections(x, norm1), x);  // [B, L, dim]
    h = add_to_temporary(attn2->forward(norm2->forward(h), context), h);                   // [B, L, dim]
    return feed_forward_recomputing_projection(h);
  }
  at::Tensor h = add_to_temporary(attn1->forward(norm1->forward(x)), x);  // [B, L, dim]
  h = add_to_temporary(attn2->forward(norm2->forward(h), context), h);    // [B, L, dim]
  if (recomputes_in_backward(*this, h)) return feed_forward_recomputing_projection(h);
  return add_to_temporary(ff->forward(norm3->forward(h)), h);             // [B, L, dim]
}

at::Tensor BasicTransformerBlockImpl::feed_forward_recomputing_projection(const at::Tensor& h) {
  // Keeps only h (norm3's input, which its backward keeps anyway); norm3 and the projection run again there.
  const at::Tensor gated = checkpoint(
      [this](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{ff->gate(norm3->forward(in[0]))}; },
      {h})[0];                                                          // [B, L, 4·dim]
  return add_to_temporary(ff->project_out(gated), h);                   // [B, L, dim]
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DOptions& o) {
  const int64_t c = o.channels;
  norm = register_module("norm",
                         GroupNorm(o.norm_num_groups, c, 1e-6));
  if (o.use_linear_projection) {
    proj_in_linear = register_module("proj_in", Linear(c, c));
    proj_in_linear->int8_activations = false;  // nn/layers.cpp
  } else
    proj_in_conv = register_module("proj_in", Conv2d(c, c, 1));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    BasicTransformerBlock block(c, o.heads, c / o.heads, o.cross_attention_dim, o.upcast_attention);
    transformer_blocks->push_back(block);
    blocks_.push_back(block);
  }
  if (o.use_linear_projection) {
    proj_out_linear = register_module("proj_out", Linear(c, c));
    proj_out_linear->int8_activations = false;  // nn/layers.cpp
  } else
    proj_out_conv = register_module("proj_out", Conv2d(c, c, 1));
}

at::Tensor Transformer2DModelImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const int64_t b = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
  at::Tensor h = norm->forward(x);  // [B, C, H, W]
  // To tokens [B, H·W, C]: the conv projection runs before the reshape, the linear one after.
  if (proj_in_conv)
    h = proj_in_conv->forward(h).permute({0, 2, 3, 1}).reshape({b, height * width, c});
  else
    h = proj_in_linear->forward(h.permute({0, 2, 3, 1}).reshape({b, height * width, c}));

  for (auto& block : blocks_) h = block->forward(h, context);  // [B, H·W, C]

  if (proj_out_conv)
    h = proj_out_conv->forward(spatial_contiguous(h.reshape({b, height, width, c}).permute({0, 3, 1, 2})));
  else
    h = spatial_contiguous(proj_out_linear->forward(h).reshape({b, height, width, c}).permute({0, 3, 1, 2}));
  return add_to_temporary(h, x);  // [B, C, H, W]
}

}  // namespace tide::nn
