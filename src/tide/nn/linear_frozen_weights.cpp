#include "tide/nn/linear_frozen_weights.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "tide/kernels/matmul_f32.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Passed to the Function as one non-tensor argument, so that autograd sees x as its only input.
struct FrozenLinearWeights {
  at::Tensor weight, scale, bias;  // as stored; scale: int8 weights only, bias: may be undefined
  bool onednn_matmul;              // the products through kernels/matmul_f32.h
};

struct FrozenLinearFunction : torch::autograd::Function<FrozenLinearFunction> {
  // Function::apply runs this with gradients off: the widened weight is a temporary of this call alone.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const FrozenLinearWeights& frozen) {
    ctx->saved_data["weight"] = frozen.weight;  // frozen: no version to check, and not x (no weight gradient)
    if (frozen.scale.defined()) ctx->saved_data["weight_scale"] = frozen.scale;
    ctx->saved_data["onednn_matmul"] = frozen.onednn_matmul;  // the backward may run in another thread
    const at::Tensor weight = weight_for_compute(frozen.weight, frozen.scale, x.scalar_type());  // [out, in]
    if (frozen.onednn_matmul && kernels::matmul_f32_supported(x, weight.t(), frozen.bias))
      return kernels::matmul_f32(x, weight.t(), frozen.bias);
    return at::linear(x, weight, frozen.bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "linear layer with frozen weights: second-order gradients are not supported (backward with create_graph)");
    const at::Tensor stored = ctx->saved_data["weight"].toTensor();
    const at::Tensor scale =
        ctx->saved_data.count("weight_scale") ? ctx->saved_data["weight_scale"].toTensor() : at::Tensor();
    const at::Tensor weight = weight_for_compute(stored, scale, grads[0].scalar_type());  // [out, in]
    // [..., out] · [out, in] -> [..., in]
    if (ctx->saved_data["onednn_matmul"].toBool() && kernels::matmul_f32_supported(grads[0], weight))
      return {kernels::matmul_f32(grads[0], weight), at::Tensor()};
    return {at::matmul(grads[0], weight), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_frozen_weights(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                                 const at::Tensor& bias) {
  TORCH_CHECK(!weight.requires_grad() && !(bias.defined() && bias.requires_grad()),
              "linear_frozen_weights: the weight and bias must not require gradients");
  return FrozenLinearFunction::apply(x, FrozenLinearWeights{weight.detach(), weight_scale, bias.defined() ? bias.detach() : bias,
                                                            runtime::optimizations().onednn_matmul});
}

}  // namespace tide::nn
