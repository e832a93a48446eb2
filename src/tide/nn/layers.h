// The parameterized layers every model is built from — Linear, Conv2d, GroupNorm, LayerNorm — with
// torch.nn's parameter names (`weight`, `bias`) and forward ops. Unlike torch::nn's, they can be built
// without random initialization (NoInitGuard): a model whose weights are loaded right after construction
// then costs neither the time of drawing ~10^9 random numbers nor touching its memory twice.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <vector>

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

class LinearImpl : public torch::nn::Module {
 public:
  // Random init as torch.nn.Linear: weight and bias ~ U(-1/√in, 1/√in).
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight, bias); }  // [..., in] -> [..., out]

  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined without bias
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Module {
 public:
  // Random init as torch.nn.Conv2d: weight and bias ~ U(-1/√fan_in, 1/√fan_in), fan_in = in·k·k.
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1, int64_t padding = 0);
  at::Tensor forward(const at::Tensor& x) {  // [B, in, H, W] -> [B, out, H', W']
    return at::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
  }

  at::Tensor weight;  // [out, in, k, k]
  at::Tensor bias;    // [out]

 private:
  int64_t stride_, padding_;
};
TORCH_MODULE(Conv2d);

class GroupNormImpl : public torch::nn::Module {
 public:
  GroupNormImpl(int64_t groups, int64_t channels, double eps);  // weight 1, bias 0
  at::Tensor forward(const at::Tensor& x) { return at::group_norm(x, groups_, weight, bias, eps_); }  // [B, C, ...]

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
