// Blocked attention for CPUs: softmax(q·kᵀ·scale)·v computed one strip of query rows at a time, so the
// full [B·H, Lq, Lk] score tensor is never materialized (plain attention writes and re-reads 1 GB of
// scores per call at SD 1.5's 64×64 level). Each strip's scores stay in L2; the two matrix products run in
// register-blocked AVX2/FMA micro-kernels (the scores' row maxima taken while still in registers), the
// softmax in an AVX2 loop; on CPUs with AVX-512 all three in 512-bit vectors (kernels/gemm_avx512.h).
// Strips of all batch × head × query blocks are handed to the threads one at a time. Without AVX2: BLAS for the products. The backward (blocked_attention_backward) recomputes the
// probabilities strip by strip the same way; kernels/attention_autograd.h makes the pair differentiable.
#pragma once
#include <ATen/ATen.h>

#include <array>

namespace tide::kernels {

// True when blocked_attention() can run these inputs: float32 CPU tensors of rank 4, d the same for
// q, k and v, no gradient needed.
bool blocked_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// q [B, H, Lq, d], k and v [B, H, Lk, d] (any strides; the last dim is made contiguous if it is not)
// -> [B, H, Lq, d], a view of memory laid out [B, Lq, H, d] so that merging the heads back is free.
// `query_block`: query rows per strip; 0 picks one whose score strip fits in L2. `allow_avx512`: use the
// AVX-512 kernels where the CPU has them (false: the AVX2 ones, e.g. to test both). `half_products`: the two
// products with float16 multiplies (kernels/attention_f16.h) where the CPU has AVX512-FP16, the head dimension is
// even and at most kHalfHeadDimMax, and the values fit (attention_half_products_fit); the softmax stays float32.
// Otherwise the float32 kernels.
at::Tensor blocked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             int64_t query_block = 0, bool allow_avx512 = true, bool half_products = false);

struct AttentionBackwardOptions {
  std::array<bool, 3> needed{true, true, true};  // which of dq, dk, dv to compute
  int64_t strip_rows = 0;     // query rows per strip; 0: attention_backward_strip_rows()
  bool allow_avx512 = true;   // as in blocked_attention()
  bool own_kernels = true;    // false: the BLAS path of CPUs without AVX2 (e.g. to test it)
};

// The gradients of blocked_attention(): given dO = ∂loss/∂out [B, H, Lq, d] and the forward's q, k, v and
// out, returns {dq, dk, dv} shaped like q, k, v (contiguous); those not needed are undefined. Recomputes
// P = softmax(q·kᵀ·scale) one strip of query rows at a time and never holds the whole [B·H, Lq, Lk]:
// with AVX2 per head, the strip's P and dS in L2 and the products in the forward's micro-kernels (heads,
// or chunks of them, handed to the threads); without, bmm over all heads per strip.
std::array<at::Tensor, 3> blocked_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                     const AttentionBackwardOptions& options = {});

// The BLAS path's bound on a strip's [B·H, rows, Lk] float32 tensors (about two are alive at once): a
// small fraction of the 512 MiB per layer plain attention keeps at 4096 tokens × 8 heads. Taller strips
// run BLAS faster (OpenBLAS, 8 heads × 4096 keys: the backward's products 5.5 s in strips of 256 rows,
// 2.7 s in strips of 1024), but this path is only for CPUs without AVX2.
constexpr int64_t kAttentionBackwardBlasStripBytes = 32ll << 20;
// Query rows per backward strip for B·H heads and Lk keys: for the AVX2 path (`own_kernels`) a head's
// strips in L2; for the BLAS path the most within kAttentionBackwardBlasStripBytes (at least one row).
int64_t attention_backward_strip_rows(int64_t batch_heads, int64_t lk, bool own_kernels = true);

}  // namespace tide::kernels
