#include "tide/nn/lean_backward.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "tide/kernels/geglu_cpu.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GroupNormShape {
  int64_t n, c, hxw, groups;
};

GroupNormShape group_norm_shape(const at::Tensor& x, int64_t groups) {
  const int64_t n = x.size(0), c = x.size(1);
  return {n, c, n * c > 0 ? x.numel() / (n * c) : 0, groups};
}

// Passed as one non-tensor argument, so that autograd sees x as the only input.
struct FrozenGroupNorm {
  at::Tensor weight, bias;  // [C], contiguous, or undefined
  int64_t groups;
  double eps;
};

// group_norm as at::group_norm computes it (x in its suggested memory format): output, mean, rstd.
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_with_stats(const at::Tensor& x, const FrozenGroupNorm& p) {
  const GroupNormShape s = group_norm_shape(x, p.groups);
  return at::native_group_norm(x, p.weight, p.bias, s.n, s.c, s.hxw, s.groups, p.eps);
}

struct GroupNormSiluFunction : torch::autograd::Function<GroupNormSiluFunction> {
  // Runs with gradients off (Function::apply): the normalized tensor is this call's own, so silu overwrites it.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const FrozenGroupNorm& p) {
    const at::Tensor input = x.contiguous(x.suggest_memory_format());  // as at::group_norm
    ctx->save_for_backward({input});
    ctx->saved_data["weight"] = p.weight;
    ctx->saved_data["bias"] = p.bias;
    ctx->saved_data["groups"] = p.groups;
    ctx->saved_data["eps"] = p.eps;
    at::Tensor normalized = std::get<0>(group_norm_with_stats(input, p));
    return at::silu_(normalized);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "group norm + silu: second-order gradients are not supported (backward with create_graph)");
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const FrozenGroupNorm p{weight, ctx->saved_data["bias"].toTensor(), ctx->saved_data["groups"].toInt(),
                            ctx->saved_data["eps"].toDouble()};
    // The same kernel on the same input: the forward's normalized tensor, mean and rstd again.
    const auto [normalized, mean, rstd] = group_norm_with_stats(x, p);
    const at::Tensor grad_normalized = at::silu_backward(grads[0], normalized);  // what silu's node gives
    const GroupNormShape s = group_norm_shape(x, p.groups);
    // What group_norm's node computes from it: libtorch 1.13's CPU kernel reads NCHW only, so its node makes
    // both tensors contiguous first (a channels-last layout read as NCHW gives wrong gradients).
    const at::Tensor dx = std::get<0>(at::native_group_norm_backward(
        grad_normalized.contiguous(), x.contiguous(), mean, rstd, weight, s.n, s.c, s.hxw, s.groups, {true, false, false}));
    return {dx, at::Tensor()};
  }
};

struct GegluFunction : torch::autograd::Function<GegluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& projected) {
    ctx->save_for_backward({projected});
    // The choice travels with the node: the backward may run in another thread.
    const bool kernel = runtime::optimizations().geglu_kernel && kernels::geglu_kernel_supported(projected);
    ctx->saved_data["kernel"] = kernel;
    if (kernel) return kernels::geglu_forward(projected);
    const auto halves = projected.chunk(2, -1);  // value, gate
    return at::gelu(halves[1]).mul_(halves[0]);  // gelu's fresh output takes the product, as inference does
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "GEGLU: second-order gradients are not supported (backward with create_graph)");
    const at::Tensor projected = ctx->get_saved_variables()[0];
    if (ctx->saved_data["kernel"].toBool()) return {kernels::geglu_backward(projected, grads[0])};
    const auto halves = projected.chunk(2, -1);
    const at::Tensor &value = halves[0], &gate = halves[1], &grad = grads[0];
    // As mul's, gelu's and chunk's nodes: d value = gelu(gate) · grad, d gate = gelu'(gate) · (grad · value),
    // concatenated; written into the halves of one tensor, without the four temporaries they allocate.
    at::Tensor dprojected = at::empty_like(projected, at::MemoryFormat::Contiguous);
    auto dhalves = dprojected.chunk(2, -1);
    at::gelu_out(dhalves[0], gate).mul_(grad);
    at::mul_out(dhalves[1], grad, value);
    at::gelu_backward_out(dhalves[1], dhalves[1], gate);
    return {dprojected};
  }
};

}  // namespace

at::Tensor group_norm_silu_lean(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                                double eps) {
  TORCH_CHECK(x.dim() >= 2 && groups > 0 && x.size(1) % groups == 0,
              "group norm: ", x.size(1), " channels cannot form ", groups, " groups");
  const at::Tensor w = weight.defined() ? weight.detach().contiguous() : weight;
  const at::Tensor b = bias.defined() ? bias.detach().contiguous() : bias;
  return GroupNormSiluFunction::apply(x, FrozenGroupNorm{w, b, groups, eps});
}

at::Tensor geglu_lean(const at::Tensor& projected) { return GegluFunction::apply(projected); }

}  // namespace tide::nn
