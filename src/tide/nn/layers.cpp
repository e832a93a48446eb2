#include "tide/nn/layers.h"

#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "tide/kernels/conv_input_gradient.h"
#include "tide/kernels/conv_forward_kernel.h"
#include "tide/kernels/direct_conv.h"
#include "tide/kernels/matmul_f32.h"
#include "tide/kernels/int8_compute.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/nn/frozen_training.h"
#include "tide/nn/in_place.h"
#include "tide/nn/lean_backward.h"
#include "tide/nn/linear_frozen_weights.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/error.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {

namespace {

thread_local bool g_random_init = true;

// Uninitialized, or U(-bound, bound) like torch.nn's default init.
at::Tensor uniform_parameter(at::IntArrayRef shape, double bound) {
  at::Tensor t = at::empty(shape);
  if (g_random_init) t.uniform_(-bound, bound);
  return t;
}

at::Tensor constant_parameter(int64_t size, double value) {
  return g_random_init ? at::full({size}, value) : at::empty({size});
}

}  // namespace

NoInitGuard::NoInitGuard() : previous_(g_random_init) { g_random_init = false; }
NoInitGuard::~NoInitGuard() { g_random_init = previous_; }

bool random_init_enabled() { return g_random_init; }

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  const double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
  weight = register_parameter("weight", uniform_parameter({out_features, in_features}, bound));
  if (with_bias) bias = register_parameter("bias", uniform_parameter({out_features}, bound));
}

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
                       bool with_bias)
    : stride_(stride), padding_(padding) {
  const int64_t fan_in = in_channels * kernel * kernel;
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  weight = register_parameter("weight", uniform_parameter({out_channels, in_channels, kernel, kernel}, bound));
  if (with_bias) bias = register_parameter("bias", uniform_parameter({out_channels}, bound));
}

namespace {

// Whether an int8 layer runs its W8A8 kernel for `x`: float32 inference on a CPU where int8 arithmetic pays.
bool use_int8_kernel(const at::Tensor& weight, const at::Tensor& x) {
  return weight.scalar_type() == at::kChar && x.scalar_type() == at::kFloat && x.device().is_cpu() &&
         runtime::optimizations().int8_kernels && !(c10::GradMode::is_enabled() && x.requires_grad()) &&
         kernels::int8_compute_available();
}

// Layers whose inputs one activation scale per tensor represents badly stay weight-only int8 (dequantized per
// call): the residual stream entering 1x1 shortcuts and stride-2 downsamplers; the transformers' projections
// in and out (1x1 convolutions in SD 1.x, linear layers Transformer2D marks in SD 2.x / XL); and the convolutions
// of SD's first, highest-resolution level: those reading 320 channels (up to 640 where the kernels halve the
// weights) and those writing 320 (the up path's last level, whose inputs join the skip connections). UNet call at
// 256 px against float32, sd15 preset: W8A8 everywhere 3.2%, weight-only everywhere 1.1%; with 8-bit weights
// (VNNI, AMX) the split by inputs alone 1.8% (2.2% with the 320-channel convolutions in W8A8); with halved weights
// (AVX2) 1.65% (2.1% with the 640-channel ones, 2.6% with all). sd21 preset, halved weights: 1.5% (2.0% with W8A8
// `proj_in`). At 512 px on VNNI the split by inputs alone gave sd15 1.96% (2.08% at 768 px); with the convolutions
// writing 320 channels weight-only too 1.66% (1.67%), for a few percent of the int8 call.
// The GEGLU output entering the feed-forward's last linear layer is quantized per token instead (FeedForward
// marks it): at 512 px on VNNI the sd15 call had 1.93% weight-only, 2.10% per tensor, 1.96% per token (sd21 1.7%,
// sdxl at 768 px 1.5%), and the layer is ~0.4 s of a 2.9 s int8 + ToMe call in float32.
bool conv_quantizes_activations(const at::Tensor& weight, int64_t stride) {
  const int64_t widest_weight_only = kernels::kernels_halve_weights() ? 640 : 320;
  return weight.size(2) > 1 && stride == 1 && weight.size(1) > widest_weight_only && weight.size(0) > 320;
}

// What a layer whose int8 weights live only in its kernel's packed copy cannot do.
[[noreturn]] void throw_plain_weights_given_up(const char* layer) {
  throw Error(std::string(layer) + ": its int8 weights were kept only in the int8 kernel's packed layout "
              "(keep_int8_weights_packed_only, for one-shot runs), so it cannot compute without that kernel "
              "(gradients, another dtype, int8_kernels switched off); load the model again");
}

}  // namespace

void keep_int8_weights_packed_only(torch::nn::Module& root) {
  for (const auto& module : root.modules(/*include_self=*/true)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(module.get())) linear->int8_.keep_packed_only();
    if (auto* conv = dynamic_cast<Conv2dImpl*>(module.get())) conv->int8_.keep_packed_only();
  }
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  runtime::FlopCount::add_macs(double(x.numel()) * double(weight.size(0)));
  if (use_int8_kernel(weight, x) && int8_activations) {
    RECORD_USER_SCOPE("tide::int8_linear");  // named in `tide bench --profile`
    at::Tensor y = int8_.get(weight, weight_scale, bias, [&] {
      return std::make_shared<const kernels::Int8Linear>(weight, weight_scale, bias, /*typical_rows=*/4096,
                                                        int8_activation_scales);
    })->forward(x);
    int8_.give_up_plain_weights(weight);
    return y;
  }
  if (int8_.plain_given_up()) throw_plain_weights_given_up("linear layer");
  // Training against frozen weights: no widened copy of a narrower weight waits in the graph, and the
  // float32 products (forward and input gradient) go through oneDNN's matmul.
  if ((weight.scalar_type() != x.scalar_type() || runtime::optimizations().onednn_matmul) &&
      trains_against_frozen(x, weight, bias)) {
    RECORD_USER_SCOPE("tide::linear_frozen_weights");  // named in `tide bench --profile`
    return linear_frozen_weights(x, weight, weight_scale, bias);
  }
  const at::Tensor w = weight_for_compute(weight, weight_scale, x.scalar_type());  // [out, in]
  // matmul_f32 keeps no autograd graph: only where nothing here wants a gradient.
  const bool graph = c10::GradMode::is_enabled() &&
                     (x.requires_grad() || w.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (runtime::optimizations().onednn_matmul && !graph && kernels::matmul_f32_supported(x, w.t(), bias)) {
    RECORD_USER_SCOPE("tide::matmul_f32");  // named in `tide bench --profile`
    return kernels::matmul_f32(x, w.t(), bias);  // [..., out]
  }
  return at::linear(x, w, bias);
}

at::Tensor spatial_contiguous(const at::Tensor& x) {
  return x.contiguous(runtime::optimizations().channels_last ? at::MemoryFormat::ChannelsLast
                                                             : at::MemoryFormat::Contiguous);
}

at::Tensor Conv2dImpl::weight_as(at::MemoryFormat format, at::ScalarType dtype) {
  if (weight.scalar_type() != dtype) return weight_for_compute(weight, weight_scale, dtype).contiguous(format);
  if (weight.is_contiguous(format)) return weight;
  const int64_t version = weight.is_inference() ? 0 : static_cast<int64_t>(weight._version());
  if (!weight_copy_.defined() || weight_copy_format_ != format || weight_copy_source_ != weight.data_ptr() ||
      weight_copy_version_ != version) {
    c10::NoGradGuard no_grad;
    weight_copy_ = weight.detach().contiguous(format);
    weight_copy_format_ = format;
    weight_copy_source_ = weight.data_ptr();
    weight_copy_version_ = version;
  }
  return weight_copy_;
}

void Conv2dImpl::store_weight_as(at::MemoryFormat format) {
  if (weight.is_contiguous(format)) return;
  c10::NoGradGuard no_grad;
  weight.set_data(weight.detach().contiguous(format));
  weight_copy_ = at::Tensor();
}

void Conv2dImpl::store_weight_hwio() {
  if (kernels::is_hwio(weight)) return;
  c10::NoGradGuard no_grad;
  weight.set_data(kernels::to_hwio(weight.detach()));
  weight_copy_ = at::Tensor();
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
  // Training against frozen weights (textual inversion): the inference path forward, the input's gradient back.
  const bool grad = c10::GradMode::is_enabled();
  if (trains_against_frozen(x, weight, bias) && x.dim() == 4 && x.device().is_cpu()) {
    RECORD_USER_SCOPE("tide::conv2d_frozen_weights");  // named in `tide bench --profile`
    return kernels::conv2d_frozen_weights(x, weight, weight_scale, stride_, padding_,
                                          [this](const at::Tensor& input) { return forward(input); },
                                          runtime::optimizations().winograd && runtime::optimizations().channels_last,
                                          runtime::optimizations().direct_conv && runtime::optimizations().channels_last,
                                          runtime::optimizations().winograd_f4);
  }
  // Channels last only for inference: plain training needs the gradient of `weight` itself.
  const bool nhwc = runtime::optimizations().channels_last && x.dim() == 4 && x.device().is_cpu() &&
                    !(grad && (weight.requires_grad() || x.requires_grad()));
  at::Tensor y;
  const bool int8_kernel = use_int8_kernel(weight, x) && x.dim() == 4 && conv_quantizes_activations(weight, stride_);
  if (!int8_kernel && int8_.plain_given_up()) throw_plain_weights_given_up("convolution");
  // A weight-only int8 convolution widens its weight once, laid out as a float32 weight is stored, so the
  // float32 kernels choose and read it as they would a float32 model's (Winograd F(4×4), the direct kernel).
  const bool widen_first = nhwc && !int8_kernel && weight.scalar_type() == at::kChar && x.scalar_type() == at::kFloat;
  const at::Tensor w = widen_first ? widened_int8_weight() : weight;
  const kernels::ConvKernel kernel =
      nhwc && !int8_kernel ? kernels::conv2d_forward_kernel(x, w, stride_, padding_, runtime::optimizations().winograd,
                                                            runtime::optimizations().winograd_f4,
                                                            runtime::optimizations().direct_conv,
                                                            runtime::optimizations().onednn_matmul)
                           : kernels::ConvKernel::onednn;
  if (int8_kernel) {
    RECORD_USER_SCOPE("tide::int8_conv2d");
    y = int8_.get(weight, weight_scale, bias, [&] {
          return std::make_shared<const kernels::Int8Conv2d>(weight, weight_scale, bias, stride_, padding_);
        })->forward(x);
    int8_.give_up_plain_weights(weight);
    // The kernel answers channels last; NCHW callers (channels_last off) get NCHW back.
    if (!nhwc) y = y.contiguous();
  } else if (kernel == kernels::ConvKernel::winograd_few_tiles || kernel == kernels::ConvKernel::winograd_f4) {
    RECORD_USER_SCOPE("tide::winograd_conv3x3");  // named in `tide bench --profile`
    y = kernels::winograd_conv3x3_few_tiles(
        x, weight_for_compute(w, weight_scale, x.scalar_type()), bias,
        kernel == kernels::ConvKernel::winograd_f4 ? kernels::WinogradTile::f4x4 : kernels::WinogradTile::f2x2);
  } else if (kernel == kernels::ConvKernel::winograd_chunked) {
    // Transformed per call rather than kept (16/9 of the weights' memory): 5 ms at 512 channels, a few % of a
    // 64×64 convolution and under 1% of the larger ones.
    RECORD_USER_SCOPE("tide::winograd_conv3x3");  // named in `tide bench --profile`
    y = kernels::winograd_conv3x3(x, kernels::winograd_weight_transform(weight_for_compute(w, weight_scale, x.scalar_type())), bias);
  } else if (kernel == kernels::ConvKernel::direct) {
    // Where Winograd does not pay (small maps, strided convolutions), on the weight as stored (HWIO, or channels
    // last on small maps): oneDNN would re-lay it out first.
    RECORD_USER_SCOPE("tide::direct_conv2d");  // named in `tide bench --profile`
    y = kernels::direct_conv2d(x, weight_for_compute(w, weight_scale, x.scalar_type()), bias, stride_, padding_);
  } else if (kernel == kernels::ConvKernel::matmul_1x1) {
    // 1×1 on small maps as a product (kernels/matmul_f32.h says why).
    RECORD_USER_SCOPE("tide::conv1x1");  // named in `tide bench --profile`
    y = kernels::conv1x1_f32(x, weight_for_compute(w, weight_scale, x.scalar_type()), bias);
  } else if (nhwc) {
    const at::Tensor w_nhwc = widen_first ? w.contiguous(at::MemoryFormat::ChannelsLast)
                                          : weight_as(at::MemoryFormat::ChannelsLast, x.scalar_type());
    y = at::conv2d(x.contiguous(at::MemoryFormat::ChannelsLast), w_nhwc, bias,
                   {stride_, stride_}, {padding_, padding_});
  } else {
    // A channels-last weight would make oneDNN pick channels last, so NCHW needs an NCHW weight.
    // With gradients the weight itself (or its differentiable widening), not a cached copy.
    const at::Tensor w_nchw = weight.requires_grad() && c10::GradMode::is_enabled()
                                  ? weight_for_compute(weight, weight_scale, x.scalar_type())
                                  : weight_as(at::MemoryFormat::Contiguous, x.scalar_type());
    y = at::conv2d(x, w_nchw, bias, {stride_, stride_}, {padding_, padding_});
  }
  runtime::FlopCount::add_macs(double(y.numel()) * double(weight.size(1) * weight.size(2) * weight.size(3)));
  return y;
}

at::Tensor Conv2dImpl::widened_int8_weight() const {
  // HWIO as store_conv_weights_for_current_layout keeps float32 weights (re-laid out in int8, a quarter of the
  // bytes), except for strided convolutions, which then go to oneDNN: on an AVX-512 CPU the direct kernel ran
  // them at 0.51× and 0.55× oneDNN's speed at 320 and 640 channels (`tide bench --conv --stride 2`, batch 2).
  const bool hwio = runtime::optimizations().direct_conv && stride_ == 1 &&
                    kernels::direct_conv2d_wants_hwio(weight.size(0), weight.size(1), weight.size(2));
  return weight_for_compute(hwio ? kernels::to_hwio(weight) : weight, weight_scale, at::kFloat);
}

void store_conv_weights_for_current_layout(torch::nn::Module& root) {
  const auto& o = runtime::optimizations();
  const auto format = o.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  for (const auto& module : root.modules(/*include_self=*/true))
    if (auto* conv = dynamic_cast<Conv2dImpl*>(module.get())) {
      const at::Tensor& w = conv->weight;
      if (o.channels_last && o.direct_conv && w.is_floating_point() &&
          kernels::direct_conv2d_wants_hwio(w.size(0), w.size(1), w.size(2)))
        conv->store_weight_hwio();
      else
        conv->store_weight_as(format);
    }
}

GroupNormImpl::GroupNormImpl(int64_t groups, int64_t channels, double eps) : groups_(groups), eps_(eps) {
  weight = register_parameter("weight", constant_parameter(channels, 1.0));
  bias = register_parameter("bias", constant_parameter(channels, 0.0));
}

at::Tensor GroupNormImpl::forward_silu(const at::Tensor& x) {
  if (trains_against_frozen(x, weight, bias)) return group_norm_silu_lean(x, groups_, weight, bias, eps_);
  return silu_temporary(forward(x));
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  weight = register_parameter("weight", constant_parameter(dim, 1.0));
  bias = register_parameter("bias", constant_parameter(dim, 0.0));
}

}  // namespace tide::nn
