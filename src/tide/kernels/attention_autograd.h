// Blocked attention that autograd can differentiate, for training (textual inversion runs the UNet with
// gradients). The forward is kernels::blocked_attention and saves only q, k, v and the output; the backward
// recomputes the probabilities one strip of query rows at a time. Neither pass holds the [B·H, Lq, Lk]
// probabilities, which plain attention keeps for its backward (512 MiB per layer at 4096 tokens, 8 heads).
#pragma once
#include <ATen/ATen.h>

#include <array>

namespace tide::kernels {

// True when blocked_attention_autograd() can run these inputs: as blocked_attention_supported(), but
// gradients may be needed.
bool blocked_attention_autograd_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// softmax(q·kᵀ/√d)·v with autograd: q [B, H, Lq, d], k and v [B, H, Lk, d] float32 CPU, any strides ->
// [B, H, Lq, d]. Differentiable once: a backward that would build a graph (second derivatives) throws.
// `strip_rows`: query rows per backward strip; 0 picks attention_backward_strip_rows().
at::Tensor blocked_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      int64_t strip_rows = 0);

// The backward alone: given dO = ∂loss/∂out and the forward's q, k, v and out, returns {dq, dk, dv}, each
// shaped like its input (contiguous [B, H, L, d]); those not in `needed` are left undefined. Memory beyond
// the inputs and results: about two [B·H, strip_rows, Lk] float32 tensors.
std::array<at::Tensor, 3> blocked_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                     int64_t strip_rows = 0,
                                                     std::array<bool, 3> needed = {true, true, true});

// Query rows per backward strip for B·H heads and Lk keys: the most whose [B·H, rows, Lk] float32 strip
// fits in kAttentionBackwardStripBytes (at least one row).
constexpr int64_t kAttentionBackwardStripBytes = 32ll << 20;
int64_t attention_backward_strip_rows(int64_t batch_heads, int64_t lk);

}  // namespace tide::kernels
