#include "tide/kernels/conv_input_gradient.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "tide/kernels/direct_conv.h"
#include "tide/kernels/weight_quantization.h"
#include "tide/kernels/winograd_conv.h"

namespace tide::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Passed to the Function as one non-tensor argument, so that autograd sees x as its only input.
struct FrozenWeight {
  at::Tensor weight, scale;  // as stored; scale: int8 weights only (else undefined)
  bool winograd = false;     // conv2d_input_gradient's
  bool direct = false;       // conv2d_input_gradient's
  bool winograd_f4 = false;  // conv2d_input_gradient's
};

struct FrozenConv2dFunction : torch::autograd::Function<FrozenConv2dFunction> {
  // Function::apply runs this with gradients off: `inference_forward` takes its fast paths.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const FrozenWeight& frozen, int64_t stride,
                            int64_t padding, const std::function<at::Tensor(const at::Tensor&)>& inference_forward) {
    ctx->saved_data["weight"] = frozen.weight;  // frozen: no version to check, and not x (no weight gradient)
    if (frozen.scale.defined()) ctx->saved_data["weight_scale"] = frozen.scale;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["winograd"] = frozen.winograd;
    ctx->saved_data["direct"] = frozen.direct;
    ctx->saved_data["winograd_f4"] = frozen.winograd_f4;
    ctx->saved_data["input_size"] = x.sizes().vec();
    return inference_forward(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "convolution with frozen weights: second-order gradients are not supported (backward with create_graph)");
    const at::Tensor stored = ctx->saved_data["weight"].toTensor();
    const at::ScalarType dtype = grads[0].scalar_type();
    const at::Tensor weight = stored.scalar_type() == at::kChar
                                  ? dequantize_per_channel(stored, ctx->saved_data["weight_scale"].toTensor(), dtype)
                                  : stored.to(dtype);
    const auto input_size = ctx->saved_data["input_size"].toIntVector();
    at::Tensor dx = conv2d_input_gradient(grads[0], weight, ctx->saved_data["stride"].toInt(),
                                          ctx->saved_data["padding"].toInt(), input_size,
                                          ctx->saved_data["winograd"].toBool(), ctx->saved_data["direct"].toBool(),
                                          ctx->saved_data["winograd_f4"].toBool());
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

ConvKernel input_gradient_kernel(const at::Tensor& grad, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 at::IntArrayRef input_size, bool winograd, bool direct, bool winograd_f4) {
  TORCH_CHECK(grad.dim() == 4 && weight.dim() == 4 && input_size.size() == 4, "conv2d_input_gradient: 4-d tensors");
  const bool same_size = weight.size(1) == input_size[1] && grad.size(2) == input_size[2] && grad.size(3) == input_size[3];
  // dx[c] = Σₖ grad[k] ⋆ w[k, c] rotated by 180°: a 3×3, stride-1, padding-1 convolution with the weight
  // [C, K, 3, 3], which the few-tiles kernels read in place, flipped and transposed (channels last as training
  // keeps it, or HWIO).
  const bool supported = winograd && same_size && winograd_conv3x3_supported(grad, weight.transpose(0, 1), stride, padding);
  const bool few_tiles_reads_weight = supported && weight.scalar_type() == at::kFloat &&
                                      (weight.is_contiguous(at::MemoryFormat::ChannelsLast) || is_hwio(weight));
  // F(4×4) tiles under the forward's rule, ahead of the direct kernel: against the best other kernel (AVX2, 2
  // threads, batch 1) 1.92× at 320 channels on 64×64, 1.46× at 640 on 32×32 and at 1280 on 16×16.
  if (few_tiles_reads_weight && winograd_f4 &&
      winograd_f4_pays_off(grad.size(0), grad.size(1), input_size[1], input_size[2], input_size[3]))
    return ConvKernel::winograd_f4;
  // Small maps (at most 256 pixels, fewer than 32 Winograd tiles, or a weight too large for Winograd to read
  // fast): the direct kernel reads the weight once, in place, front to back; oneDNN re-lays it out for little
  // work (`tide bench --conv --backward`).
  const bool direct_here = direct && same_size && direct_conv2d_input_gradient_supported(grad, weight, stride, padding);
  if (direct_here && direct_conv2d_preferred(grad, weight, 1, padding))
    return ConvKernel::direct;
  if (supported) {
    // F(2×2) tiles under the forward's rule: the few-tiles kernel against oneDNN's backward-data kernel (AVX2, 2
    // threads, batch 1) 1.75–1.9× at 320 channels on 32×32 and 64×64, 1.45× at 640 on 16×16, 1.25–1.3× at
    // 1280 on 16×16.
    // The chunked kernel from 512 tiles, where it won 1.5–1.8× over oneDNN (48×48 and 64×64 maps); on 256
    // tiles it lost (SD 1.5's 256 px step: 0.90–0.93 s against oneDNN's 0.85–0.87 s). It also takes the maps
    // whose transformed gradient outgrows the few-tiles kernel's cache (320 channels on 64×64: 230 vs 170 GFLOP/s).
    const bool chunked = winograd_tiles(grad.size(0), input_size[2], input_size[3]) >= 512 &&
        winograd_conv3x3_pays_off(grad.size(0), grad.size(1), input_size[1], input_size[2], input_size[3]);
    if (few_tiles_reads_weight && winograd_few_tiles_preferred(grad.size(0), grad.size(1), input_size[1], input_size[2], input_size[3], chunked))
      return ConvKernel::winograd_few_tiles;
    if (chunked) return ConvKernel::winograd_chunked;
  }
  if (direct_here) return ConvKernel::direct;
  return ConvKernel::onednn;
}

at::Tensor conv2d_input_gradient(const at::Tensor& grad, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 at::IntArrayRef input_size, bool winograd, bool direct, bool winograd_f4) {
  switch (input_gradient_kernel(grad, weight, stride, padding, input_size, winograd, direct, winograd_f4)) {
    case ConvKernel::winograd_few_tiles: return winograd_conv3x3_input_gradient(grad, weight);
    case ConvKernel::winograd_f4: return winograd_conv3x3_input_gradient(grad, weight, WinogradTile::f4x4);
    case ConvKernel::winograd_chunked:
      return winograd_conv3x3(grad, winograd_weight_transform(weight.flip({2, 3}).transpose(0, 1)), at::Tensor());
    case ConvKernel::direct: return direct_conv2d_input_gradient(grad, weight, padding);
    case ConvKernel::matmul_1x1:  // a forward kernel only
    case ConvKernel::onednn: break;
  }
  // oneDNN's backward-data kernel, as autograd calls it, but with only the input gradient asked for: the
  // input then only gives the result's shape and layout, so an unwritten tensor of that shape stands in.
  const at::Tensor shape_only = at::empty(input_size, grad.options().memory_format(grad.suggest_memory_format()));
  return std::get<0>(at::convolution_backward(grad, shape_only, weight, c10::nullopt, {stride, stride},
                                              {padding, padding}, {1, 1}, false, {0, 0}, 1, {true, false, false}));
}

at::Tensor conv2d_frozen_weights(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& weight_scale,
                                 int64_t stride, int64_t padding,
                                 const std::function<at::Tensor(const at::Tensor&)>& inference_forward,
                                 bool winograd, bool direct, bool winograd_f4) {
  TORCH_CHECK(!weight.requires_grad(), "conv2d_frozen_weights: the weight must not require gradients");
  return FrozenConv2dFunction::apply(x, FrozenWeight{weight.detach(), weight_scale, winograd, direct, winograd_f4},
                                     stride, padding,
                                     inference_forward);
}

}  // namespace tide::kernels
