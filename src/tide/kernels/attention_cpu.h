// Blocked attention for CPUs: softmax(q·kᵀ·scale)·v computed one strip of query rows at a time, so the
// full [B·H, Lq, Lk] score tensor is never materialized (plain attention writes and re-reads 1 GB of
// scores per call at SD 1.5's 64×64 level). Each strip's scores stay in L2; the two matrix products run in
// register-blocked AVX2/FMA micro-kernels (the scores' row maxima taken while still in registers; a taller
// probs·v tile where AVX-512VL gives 32 registers), the softmax in an AVX2 loop; strips of all batch × head × query blocks are handed to the threads one at a
// time. Without AVX2: BLAS for the products. Forward only (no autograd).
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

// True when blocked_attention() can run these inputs: float32 CPU tensors of rank 4, d the same for
// q, k and v, no gradient needed.
bool blocked_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// q [B, H, Lq, d], k and v [B, H, Lk, d] (any strides; the last dim is made contiguous if it is not)
// -> [B, H, Lq, d], a view of memory laid out [B, Lq, H, d] so that merging the heads back is free.
// `query_block`: query rows per strip; 0 picks one whose score strip fits in L2. `allow_avx512`: use the
// taller AVX-512VL probs·v tile where the CPU has it (false: the AVX2 tiles, e.g. to test both).
at::Tensor blocked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             int64_t query_block = 0, bool allow_avx512 = true);

}  // namespace tide::kernels
