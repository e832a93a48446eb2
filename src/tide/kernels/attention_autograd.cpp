#include "tide/kernels/attention_autograd.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
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

// Keeps the projection in the autograd context (whose saved data holds only IValues).
struct ProjectionHolder : torch::CustomClassHolder {
  explicit ProjectionHolder(AttentionProjection p) : project(std::move(p)) {}
  AttentionProjection project;
};

struct RecomputingAttentionFunction : torch::autograd::Function<RecomputingAttentionFunction> {
  // Runs with gradients off (Function::apply): the projection records nothing.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const AttentionProjection& project) {
    const auto [q, k, v] = project(x);
    at::Tensor out = blocked_attention(q, k, v);  // [B, H, L, d]
    ctx->save_for_backward({x, out});
    ctx->saved_data["project"] = c10::IValue::make_capsule(c10::make_intrusive<ProjectionHolder>(project));
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "blocked attention: second-order gradients are not supported (backward with create_graph)");
    const variable_list saved = ctx->get_saved_variables();
    const auto holder = ctx->saved_data["project"].toCapsule();
    const AttentionProjection& project = static_cast<ProjectionHolder*>(holder.get())->project;
    const at::Tensor x = saved[0].detach().requires_grad_(true);
    std::array<at::Tensor, 3> qkv;
    {
      c10::AutoGradMode recording(true);  // the projection's graph, for x's gradient
      qkv = project(x);
    }
    const auto [dq, dk, dv] =
        blocked_attention_backward(grads[0], qkv[0].detach(), qkv[1].detach(), qkv[2].detach(), saved[1]);
    const variable_list dx = torch::autograd::grad({qkv[0], qkv[1], qkv[2]}, {x}, {dq, dk, dv},
                                                   /*retain_graph=*/false, /*create_graph=*/false);
    return {dx[0], at::Tensor()};
  }
};

}  // namespace

at::Tensor blocked_attention_recomputing_inputs(const at::Tensor& x, const AttentionProjection& project) {
  return RecomputingAttentionFunction::apply(x, project);
}

bool blocked_attention_autograd_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  c10::AutoGradMode no_grad(false);  // the same checks, gradients aside
  return blocked_attention_supported(q, k, v);
}

at::Tensor blocked_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      int64_t strip_rows) {
  return BlockedAttentionFunction::apply(q, k, v, strip_rows);
}

}  // namespace tide::kernels
