#include "tide/bench/conv_bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>

#include "tide/kernels/winograd_conv.h"
#include "tide/runtime/error.h"

namespace tide::bench {

ConvBenchResult run_conv_bench(const ConvBenchSettings& s) {
  if (s.batch < 1 || s.in_channels < 1 || s.out_channels < 1 || s.size < 1 || s.runs < 1 || s.warmup < 0)
    throw Error("tide bench --conv: batch, channels, size and runs must be positive, warmup not negative");
  c10::InferenceMode inference;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const at::Tensor x =
      at::randn({s.batch, s.in_channels, s.size, s.size}, gen).contiguous(at::MemoryFormat::ChannelsLast);
  // As the models store them: channels-last weights (nn::store_conv_weights_for_current_layout).
  const at::Tensor weight = (at::randn({s.out_channels, s.in_channels, 3, 3}, gen) / std::sqrt(9.0 * s.in_channels))
                                .contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor bias = at::randn({s.out_channels}, gen);
  if (!kernels::winograd_conv3x3_supported(x, weight, 1, 1))
    throw Error("tide bench --conv: the Winograd kernel does not support this convolution");

  auto seconds = [](auto&& fn, at::Tensor& out) {
    const auto start = std::chrono::steady_clock::now();
    out = fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto winograd = [&] { return kernels::winograd_conv3x3(x, kernels::winograd_weight_transform(weight), bias); };
  auto direct = [&] { return at::conv2d(x, weight, bias, 1, 1); };

  ConvBenchResult r;
  r.flops = 2.0 * double(s.batch * s.out_channels * s.size * s.size) * double(s.in_channels * 9);
  r.pays_off = kernels::winograd_conv3x3_pays_off(s.batch, s.in_channels, s.out_channels, s.size, s.size);
  at::Tensor yw, yd;
  for (int i = 0; i < s.warmup + s.runs; ++i) {
    yw = at::Tensor();  // the previous output does not count against this call
    const double tw = seconds(winograd, yw);
    yd = at::Tensor();
    const double td = seconds(direct, yd);
    if (i >= s.warmup) {
      r.winograd_s.push_back(tw);
      r.direct_s.push_back(td);
    }
  }
  r.max_abs_diff = (yw - yd).abs().max().item<double>();
  return r;
}

}  // namespace tide::bench
