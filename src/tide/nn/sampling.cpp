#include "tide/nn/sampling.h"

#include <torch/nn/functional/upsampling.h>

namespace tide::nn {

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding) : padding_(padding) {
  conv = register_module(
      "conv", Conv2d(channels, channels, 3, 2, padding));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  if (padding_ == 0) return conv->forward(at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  return conv->forward(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv",
                         Conv2d(channels, channels, 3, 1, 1));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x, const std::vector<int64_t>& output_size) {
  namespace F = torch::nn::functional;
  auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
  if (output_size.empty())
    opts.scale_factor(std::vector<double>{2.0, 2.0});
  else
    opts.size(output_size);
  return conv->forward(F::interpolate(x, opts));
}

}  // namespace tide::nn
