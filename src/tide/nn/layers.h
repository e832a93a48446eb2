// The parameterized layers every model is built from — Linear, Conv2d, GroupNorm, LayerNorm — with
// torch.nn's parameter names (`weight`, `bias`) and forward ops. Unlike torch::nn's, they can be built
// without random initialization (NoInitGuard): a model whose weights are loaded right after construction
// then costs neither the time of drawing ~10^9 random numbers nor touching its memory twice.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <vector>

#include "tide/nn/int8_kernel_cache.h"
#include "tide/runtime/flop_counter.h"

namespace tide::kernels {
class Int8Linear;
class Int8Conv2d;
enum class ActivationScales;  // kernels/int8_compute.h
}  // namespace tide::kernels

namespace tide::nn {

// While alive (on this thread), new layers' parameters are allocated but left uninitialized.
class NoInitGuard {
 public:
  NoInitGuard();
  ~NoInitGuard();
  NoInitGuard(const NoInitGuard&) = delete;
  NoInitGuard& operator=(const NoInitGuard&) = delete;

 private:
  bool previous_;
};

// False inside a NoInitGuard.
bool random_init_enabled();

// `x` [B, C, H, W] made dense in the layout the convolutions use: NHWC (channels last) with the
// channels_last optimization, NCHW otherwise. No copy when it already is.
at::Tensor spatial_contiguous(const at::Tensor& x);

// For one-shot runs: every int8 Linear and Conv2d under `root` that computes with the int8 kernels keeps its
// weights only in the kernel's packed layout once its first call has packed them (SD 1.5's UNet: 0.66 GB less;
// `weight` keeps its shape over one byte). Afterwards the layer can only run that kernel: a path that needs the
// plain weights (gradients, another dtype, int8_kernels off) is a tide::Error, and merging a LoRA or saving
// would read zeros, so the pipeline refuses them.
void keep_int8_weights_packed_only(torch::nn::Module& root);

class LinearImpl : public torch::nn::Module {
 public:
  // Random init as torch.nn.Linear: weight and bias ~ U(-1/√in, 1/√in).
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x);  // [..., in] -> [..., out]

  at::Tensor weight;        // [out, in]: float32, float16, bfloat16 or int8 (nn/weight_storage.h)
  at::Tensor bias;          // [out], undefined without bias
  at::Tensor weight_scale;  // [out]: int8 weights only, w ≈ weight · weight_scale[:, None]
  at::ScalarType stored_dtype = at::kFloat;  // kFloat: `weight` follows the compute dtype (set_compute_dtype)
  // false: int8 weights are dequantized per call (weight-only) instead of running the W8A8 kernel, for a layer
  // whose input one activation scale per tensor represents badly (its owner says so; nn/layers.cpp says why).
  bool int8_activations = true;
  // How the W8A8 kernel quantizes the input: one scale per tensor, or per row (token) for an input whose tokens
  // differ in range (its owner says so; nn/layers.cpp says why).
  kernels::ActivationScales int8_activation_scales{};  // per_tensor

 private:
  friend void keep_int8_weights_packed_only(torch::nn::Module& root);
  Int8KernelCache<kernels::Int8Linear> int8_;
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Module {
 public:
  // Random init as torch.nn.Conv2d: weight and bias ~ U(-1/√fan_in, 1/√fan_in), fan_in = in·k·k.
  // bias = false: no `bias` parameter (torch.nn.Conv2d(..., bias=False)).
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
             bool bias = true);
  at::Tensor forward(const at::Tensor& x);  // [B, in, H, W] -> [B, out, H', W']

  // Re-stores `weight` in `format` (NCHW or channels last), so that the layout the forward pass wants is
  // the weight itself and no second copy is kept.
  void store_weight_as(at::MemoryFormat format);
  // Re-stores `weight` HWIO (kernels/direct_conv.h): what the direct kernel and Winograd's transform read.
  void store_weight_hwio();

  at::Tensor weight;        // [out, in, k, k]: float32, float16, bfloat16 or int8 (nn/weight_storage.h)
  at::Tensor bias;          // [out], undefined without bias
  at::Tensor weight_scale;  // [out]: int8 weights only
  at::ScalarType stored_dtype = at::kFloat;  // kFloat: `weight` follows the compute dtype (set_compute_dtype)

 private:
  // `weight` in `format` and `dtype`: the weight itself when it is stored that way; else, for a weight stored
  // in `dtype`, a copy made once (re-made if the weight changes), so that oneDNN never re-lays out the
  // weight on every call; else (16-bit or int8 storage) a temporary widened per call.
  at::Tensor weight_as(at::MemoryFormat format, at::ScalarType dtype);
  // An int8 `weight` dequantized to float32 for a weight-only call, HWIO where the direct kernel wants it.
  at::Tensor widened_int8_weight() const;

  friend void keep_int8_weights_packed_only(torch::nn::Module& root);
  int64_t stride_, padding_;
  Int8KernelCache<kernels::Int8Conv2d> int8_;
  at::Tensor weight_copy_;
  at::MemoryFormat weight_copy_format_ = at::MemoryFormat::Contiguous;
  const void* weight_copy_source_ = nullptr;
  int64_t weight_copy_version_ = -1;
};
TORCH_MODULE(Conv2d);

// Stores every convolution weight under `root` in the layout the current optimizations use (HWIO for the
// direct kernel, else channels last, or NCHW). Loading a model and `tide bench` switching sides call it,
// outside any timed region.
void store_conv_weights_for_current_layout(torch::nn::Module& root);

class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t groups, int64_t channels, double eps);  // weight 1, bias 0
  at::Tensor forward(const at::Tensor& x) { return at::group_norm(x, groups_, weight, bias, eps_); }  // [B, C, ...]
  // silu(forward(x)), overwriting the norm's output; in training the backward keeps x alone (nn/lean_backward.h).
  at::Tensor forward_silu(const at::Tensor& x);  // [B, C, ...]

  at::Tensor weight, bias;  // [C]

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);  // weight 1, bias 0
  at::Tensor forward(const at::Tensor& x) { return at::layer_norm(x, {dim_}, weight, bias, eps_); }  // [..., dim]

  at::Tensor weight, bias;  // [dim]

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

}  // namespace tide::nn
