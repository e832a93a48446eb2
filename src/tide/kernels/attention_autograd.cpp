#include "tide/kernels/attention_autograd.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

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
    AttentionBackwardOptions options;
    options.needed = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    options.strip_rows = ctx->saved_data["strip_rows"].toInt();
    const auto [dq, dk, dv] = blocked_attention_backward(grads[0], saved[0], saved[1], saved[2], saved[3], options);
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

}  // namespace tide::kernels
