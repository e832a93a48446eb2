#include "tide/kernels/attention_autograd.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "tide/kernels/attention_cpu.h"

namespace tide::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct BlockedAttentionFunction : torch::autograd::Function<BlockedAttentionFunction> {
  // Function::apply runs this with gradients off, so the forward-only kernel accepts the inputs.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t strip_rows) {
    at::Tensor out = blocked_attention(q, k, v);  // [B, H, Lq, d]
    ctx->save_for_backward({q, k, v, out});
    ctx->saved_data["strip_rows"] = strip_rows;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The recomputation below is not itself differentiated: a graph of it would miss the path through the
    // saved output and give wrong second derivatives.
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "blocked attention: second-order gradients are not supported (backward with create_graph)");
    const variable_list saved = ctx->get_saved_variables();
    const auto [dq, dk, dv] = blocked_attention_backward(
        grads[0], saved[0], saved[1], saved[2], saved[3], ctx->saved_data["strip_rows"].toInt(),
        {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)});
    return {dq, dk, dv, at::Tensor()};
  }
};

}  // namespace

bool blocked_attention_autograd_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  c10::AutoGradMode no_grad(false);  // the same checks, gradients aside
  return blocked_attention_supported(q, k, v);
}

at::Tensor blocked_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      int64_t strip_rows) {
  return BlockedAttentionFunction::apply(q, k, v, strip_rows);
}

int64_t attention_backward_strip_rows(int64_t batch_heads, int64_t lk) {
  const int64_t row_bytes = std::max<int64_t>(1, batch_heads * lk) * int64_t(sizeof(float));
  return std::max<int64_t>(1, kAttentionBackwardStripBytes / row_bytes);
}

std::array<at::Tensor, 3> blocked_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                     const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                     int64_t strip_rows, std::array<bool, 3> needed) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), Lk = k.size(2), d = q.size(3), BH = B * H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Heads folded into the batch for bmm; copies the strided head views [B, L, H, d] into [B·H, L, d].
  auto fold = [&](const at::Tensor& t) { return t.reshape({BH, t.size(2), d}); };
  const at::Tensor qs = fold(q) * scale;            // [B·H, Lq, d], the scale applied once
  const at::Tensor k3 = fold(k), v3 = fold(v);      // [B·H, Lk, d]
  const at::Tensor dout = fold(grad_out);           // [B·H, Lq, d]
  // The softmax backward's Σ_j P_ij·dP_ij equals dO_i·O_i: O(L·d) from the output instead of O(L²) per strip.
  const at::Tensor delta = (dout * fold(out)).sum(-1, /*keepdim=*/true);  // [B·H, Lq, 1]

  const auto opts = qs.options();
  at::Tensor dq = needed[0] ? at::empty({BH, Lq, d}, opts) : at::Tensor();
  at::Tensor dk = needed[1] ? at::zeros({BH, Lk, d}, opts) : at::Tensor();
  at::Tensor dv = needed[2] ? at::zeros({BH, Lk, d}, opts) : at::Tensor();
  const int64_t rows = strip_rows > 0 ? strip_rows : attention_backward_strip_rows(BH, Lk);
  for (int64_t i0 = 0; i0 < Lq && (needed[0] || needed[1] || needed[2]); i0 += rows) {
    const int64_t n = std::min(rows, Lq - i0);
    const at::Tensor q_s = qs.narrow(1, i0, n), dout_s = dout.narrow(1, i0, n);  // [B·H, n, d]
    const at::Tensor p = at::softmax(at::bmm(q_s, k3.transpose(1, 2)), -1);     // [B·H, n, Lk]
    if (needed[2]) dv.baddbmm_(p.transpose(1, 2), dout_s);                       // += Pᵀ·dO_s
    if (!needed[0] && !needed[1]) continue;
    at::Tensor ds = at::bmm(dout_s, v3.transpose(1, 2));  // dP [B·H, n, Lk]
    ds.sub_(delta.narrow(1, i0, n)).mul_(p);              // dS = P∘(dP − D), in place
    if (needed[0]) {
      at::Tensor dq_s = dq.narrow(1, i0, n);
      at::bmm_out(dq_s, ds, k3);  // dS·k; the scale once at the end
    }
    if (needed[1]) dk.baddbmm_(ds.transpose(1, 2), q_s);  // += scale·dSᵀ·q_s (q_s carries the scale)
  }
  if (needed[0]) dq.mul_(scale);
  auto unfold = [&](const at::Tensor& t) { return t.defined() ? t.view({B, H, t.size(1), d}) : t; };
  return {unfold(dq), unfold(dk), unfold(dv)};
}

}  // namespace tide::kernels
