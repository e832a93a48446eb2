// Blocked attention that autograd can differentiate, for training (textual inversion runs the UNet with
// gradients). The forward is kernels::blocked_attention and saves only q, k, v and the output; the backward
// (kernels::blocked_attention_backward) recomputes the probabilities one strip of query rows at a time.
// Neither pass holds the [B·H, Lq, Lk] probabilities, which plain attention keeps for its backward
// (512 MiB per layer at 4096 tokens, 8 heads).
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <functional>

namespace tide::kernels {

// True when blocked_attention_autograd() can run these inputs: as blocked_attention_supported(), but
// gradients may be needed.
bool blocked_attention_autograd_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// softmax(q·kᵀ/√d)·v with autograd: q [B, H, Lq, d], k and v [B, H, Lk, d] float32 CPU, any strides ->
// [B, H, Lq, d]. Differentiable once: a backward that would build a graph (second derivatives) throws.
// `strip_rows`: query rows per backward strip; 0 picks attention_backward_strip_rows().
at::Tensor blocked_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      int64_t strip_rows = 0);

// Makes q, k, v [B, H, L, d] from an input x (for a transformer block: norm1, then the frozen to_q, to_k, to_v).
using AttentionProjection = std::function<std::array<at::Tensor, 3>(const at::Tensor& x)>;

// blocked_attention_autograd(project(x)) keeping only x and the output: the backward runs `project` again
// (recording it, so that its own backward gives x's gradient) instead of keeping q, k and v, the three
// largest of the tensors a self-attention keeps. `project` must be deterministic and compute from x alone
// (what it captures gets no gradient). Differentiable once.
at::Tensor blocked_attention_recomputing_inputs(const at::Tensor& x, const AttentionProjection& project);

}  // namespace tide::kernels
