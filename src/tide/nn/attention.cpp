#include "tide/nn/attention.h"

#include <ATen/record_function.h>

#include <cmath>

#include "tide/kernels/attention_autograd.h"
#include "tide/kernels/attention_cpu.h"
#include "tide/runtime/flop_counter.h"
#include "tide/runtime/optimizations.h"
#include "tide/nn/in_place.h"

namespace tide::nn {
namespace {

// q·kᵀ and probs·v of B·H heads, for `tide bench`'s FLOP count.
void count_attention_macs(int64_t batch_heads, int64_t lq, int64_t lk, int64_t d) {
  runtime::FlopCount::add_macs(2.0 * double(batch_heads) * double(lq) * double(lk) * double(d));
}

// [B, L, H·d] -> [B, H, L, d] (a view)
at::Tensor split_heads(const at::Tensor& t, int64_t b, int64_t heads, int64_t d) {
  return t.view({b, -1, heads, d}).transpose(1, 2);
}

}  // namespace

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        bool upcast, bool half_products) {
  count_attention_macs(q.size(0) * q.size(1), q.size(2), k.size(2), q.size(3));
  // float32 inputs: upcasting changes nothing, so the blocked kernel computes the same thing.
  if (runtime::optimizations().blocked_attention) {
    RECORD_USER_SCOPE("tide::blocked_attention");  // named in `tide bench --profile`
    if (kernels::blocked_attention_supported(q, k, v))
      return kernels::blocked_attention(q, k, v, /*query_block=*/0, /*allow_avx512=*/true, half_products);
    // Training: the same kernel, with a backward that recomputes the probabilities strip by strip instead of
    // keeping all of them as plain attention does.
    if (kernels::blocked_attention_autograd_supported(q, k, v)) return kernels::blocked_attention_autograd(q, k, v);
    // bf16 (--dtype bf16): the blocked kernel in float32. Casting q, k, v costs O(L·d) against the O(L²·d)
    // products, and the softmax keeps float32 accuracy.
    if (q.scalar_type() == at::kBFloat16) {
      const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat);
      if (kernels::blocked_attention_supported(qf, kf, vf))
        return kernels::blocked_attention(qf, kf, vf).to(q.scalar_type());
      if (kernels::blocked_attention_autograd_supported(qf, kf, vf))
        return kernels::blocked_attention_autograd(qf, kf, vf).to(q.scalar_type());
    }
  }
  // As diffusers' AttnProcessor on heads folded into the batch: baddbmm with alpha = scale, softmax, bmm.
  const int64_t b = q.size(0), heads = q.size(1), lq = q.size(2), lk = k.size(2), d = q.size(3);
  at::Tensor q3 = q.reshape({b * heads, lq, d});
  at::Tensor k3 = k.reshape({b * heads, lk, d});
  if (upcast) {
    q3 = q3.to(at::kFloat);
    k3 = k3.to(at::kFloat);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Zeros, not empty: libtorch's small-size baddbmm kernel reads the input even with beta = 0 (NaN garbage).
  const at::Tensor scores = at::baddbmm(at::zeros({b * heads, lq, lk}, q3.options()), q3, k3.transpose(-1, -2),
                                        /*beta=*/0, /*alpha=*/scale);  // [B·H, Lq, Lk]
  const at::Tensor probs = at::softmax(upcast ? scores.to(at::kFloat) : scores, -1).to(v.scalar_type());
  return at::bmm(probs, v.reshape({b * heads, lk, d})).view({b, heads, lq, d});  // [B, H, Lq, d]
}

AttentionImpl::AttentionImpl(const AttentionOptions& options) : options_(options) {
  const int64_t inner = options.heads * options.dim_head;
  const int64_t kv_dim = options.cross_attention_dim > 0 ? options.cross_attention_dim : options.query_dim;
  if (options.norm_num_groups > 0) {
    group_norm = register_module(
        "group_norm", GroupNorm(options.norm_num_groups, options.query_dim, options.norm_eps));
  }
  to_q = register_module("to_q", Linear(options.query_dim, inner, options.bias));
  to_k = register_module("to_k", Linear(kv_dim, inner, options.bias));
  to_v = register_module("to_v", Linear(kv_dim, inner, options.bias));
  out_proj_ = Linear(inner, options.query_dim, options.out_bias);
  to_out = register_module("to_out", torch::nn::ModuleList(out_proj_));
}

at::Tensor AttentionImpl::forward(const at::Tensor& hidden, const at::Tensor& context) {
  const bool spatial = hidden.dim() == 4;
  const int64_t b = hidden.size(0);
  at::Tensor x = hidden;
  if (spatial) x = hidden.flatten(2).transpose(1, 2);  // [B, C, H, W] -> [B, HW, C] (free when NHWC)
  if (group_norm) x = group_norm->forward(x.transpose(1, 2)).transpose(1, 2);

  const at::Tensor& kv = context.defined() ? context : x;
  const int64_t heads = options_.heads, d = options_.dim_head;
  const at::Tensor q = split_heads(to_q->forward(x), b, heads, d);   // [B, H, L, d]
  const at::Tensor k = split_heads(to_k->forward(kv), b, heads, d);  // [B, H, Lk, d]
  const at::Tensor v = split_heads(to_v->forward(kv), b, heads, d);  // [B, H, Lk, d]

  // Queries, keys and values from int8 weights (steps of 1/127 of each channel's largest weight) carry several
  // times float16's rounding (2^-11): the products may take float16.
  const bool half_products = runtime::optimizations().half_attention && to_q->stored_dtype == at::kChar &&
                             to_k->stored_dtype == at::kChar && to_v->stored_dtype == at::kChar;
  at::Tensor out = scaled_dot_product_attention(q, k, v, options_.upcast, half_products);  // [B, H, L, d]
  out = out.transpose(1, 2).reshape({b, -1, heads * d});                   // [B, L, H·d]
  out = out_proj_->forward(out);                                           // [B, L, C]

  if (spatial) out = out.transpose(-1, -2).reshape(hidden.sizes());  // [B, C, H, W]
  if (options_.residual_connection) out = add_to_temporary(out, hidden);
  if (options_.rescale_output_factor != 1.0) out = out / options_.rescale_output_factor;
  return out;
}

at::Tensor AttentionImpl::forward_recomputing_projections(const at::Tensor& x, LayerNorm norm) {
  const bool plain_self_attention = options_.cross_attention_dim == 0 && !group_norm && !options_.residual_connection &&
                                    options_.rescale_output_factor == 1.0 && x.dim() == 3;
  if (!plain_self_attention || !runtime::optimizations().blocked_attention || x.scalar_type() != at::kFloat)
    return forward(norm->forward(x));
  const int64_t b = x.size(0), heads = options_.heads, d = options_.dim_head;
  count_attention_macs(b * heads, x.size(1), x.size(1), d);
  // Captures the modules (shared pointers), not this frame: the backward calls it after forward returns.
  const auto project = [norm = norm.ptr(), q = to_q.ptr(), k = to_k.ptr(), v = to_v.ptr(), b, heads,
                        d](const at::Tensor& input) {
    const at::Tensor n = norm->forward(input);  // [B, L, C]
    return std::array<at::Tensor, 3>{split_heads(q->forward(n), b, heads, d), split_heads(k->forward(n), b, heads, d),
                                     split_heads(v->forward(n), b, heads, d)};  // [B, H, L, d]
  };
  RECORD_USER_SCOPE("tide::blocked_attention");
  at::Tensor out = kernels::blocked_attention_recomputing_inputs(x, project);  // [B, H, L, d]
  out = out.transpose(1, 2).reshape({b, -1, heads * d});                       // [B, L, H·d]
  return out_proj_->forward(out);                                              // [B, L, C]
}

}  // namespace tide::nn
