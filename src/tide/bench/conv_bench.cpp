#include "tide/bench/conv_bench.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>

#include "tide/kernels/conv_forward_kernel.h"
#include "tide/kernels/conv_input_gradient.h"
#include "tide/kernels/direct_conv.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/runtime/error.h"
#include "tide/runtime/memory.h"

namespace tide::bench {

ConvBenchResult run_conv_bench(const ConvBenchSettings& s) {
  if (s.batch < 1 || s.in_channels < 1 || s.out_channels < 1 || s.size < 1 || s.runs < 1 || s.warmup < 0)
    throw Error("tide bench --conv: batch, channels, size and runs must be positive, warmup not negative");
  if (s.kernel_size < 1 || s.kernel_size % 2 == 0 || s.stride < 1)
    throw Error("tide bench --conv: the kernel size must be odd and positive, the stride positive");
  c10::InferenceMode inference;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const int64_t ks = s.kernel_size, pad = ks / 2;
  const at::Tensor x =
      at::randn({s.batch, s.in_channels, s.size, s.size}, gen).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor weight =
      (at::randn({s.out_channels, s.in_channels, ks, ks}, gen) / std::sqrt(double(ks * ks * s.in_channels)))
          .contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor hwio = kernels::to_hwio(weight);
  const at::Tensor bias = at::randn({s.out_channels}, gen);
  const int64_t out_size = (s.size + 2 * pad - ks) / s.stride + 1;
  // backward: the gradient of the convolution's output, and the input's size it is taken back to.
  const at::Tensor grad =
      at::randn({s.batch, s.out_channels, out_size, out_size}, gen).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> input_size{s.batch, s.in_channels, s.size, s.size};
  const bool direct_forward = kernels::direct_conv2d_supported(x, hwio, s.stride, pad);
  const bool direct = s.backward ? kernels::direct_conv2d_input_gradient_supported(grad, weight, s.stride, pad)
                                 : direct_forward;
  const bool winograd = ks == 3 && s.stride == 1 &&
                        (s.backward ? kernels::winograd_conv3x3_supported(grad, weight.transpose(0, 1), 1, 1)
                                    : kernels::winograd_conv3x3_supported(x, weight, 1, 1));

  auto seconds = [](auto&& fn, at::Tensor& out) {
    out = at::Tensor();  // the previous output does not count against this call
    const auto start = std::chrono::steady_clock::now();
    out = fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  ConvBenchResult r;
  r.flops = 2.0 * double(s.batch * s.out_channels * out_size * out_size) * double(s.in_channels * ks * ks);
  // The path the Conv2d module takes (conv2d_forward_kernel) on its weight: HWIO where the direct kernel can
  // read it, else channels last; the few-tiles kernel reads either in place. Backward: conv2d_input_gradient's.
  const at::Tensor& module_weight = direct_forward ? hwio : weight;
  r.path = s.backward ? kernels::conv_kernel_name(kernels::input_gradient_kernel(
                            grad, weight, s.stride, pad, input_size, /*winograd=*/true, /*direct=*/true, /*winograd_f4=*/true))
                      : kernels::conv_kernel_name(kernels::conv2d_forward_kernel(
                            x, module_weight, s.stride, pad, /*winograd=*/true, /*winograd_f4=*/true, /*direct=*/true,
                            /*matmul_1x1=*/true));
  r.winograd_few_tiles_pays_off = r.path == "winograd, few tiles";
  r.winograd_pays_off = r.path == "winograd, chunked";
  // Forward: at::conv2d (oneDNN), the direct kernel on the HWIO weight, the chunked Winograd kernel with its
  // weight transform, the few-tiles one on the module's weight. Backward: the same kernels' input gradients.
  const at::Tensor flipped = s.backward && winograd ? weight.flip({2, 3}).transpose(0, 1) : at::Tensor();
  auto run_onednn = [&] {
    return s.backward ? kernels::conv2d_input_gradient(grad, weight, s.stride, pad, input_size)
                      : at::conv2d(x, weight, bias, s.stride, pad);
  };
  auto run_direct = [&] {
    return s.backward ? kernels::direct_conv2d_input_gradient(grad, weight, pad)
                      : kernels::direct_conv2d(x, hwio, bias, s.stride, pad);
  };
  auto run_winograd = [&] {
    return s.backward ? kernels::winograd_conv3x3(grad, kernels::winograd_weight_transform(flipped), at::Tensor())
                      : kernels::winograd_conv3x3(x, kernels::winograd_weight_transform(weight), bias);
  };
  auto run_few_tiles = [&] {
    return s.backward ? kernels::winograd_conv3x3_input_gradient(grad, weight)
                      : kernels::winograd_conv3x3_few_tiles(x, module_weight, bias);
  };
  auto run_f4 = [&] {
    return s.backward ? kernels::winograd_conv3x3_input_gradient(grad, weight, kernels::WinogradTile::f4x4)
                      : kernels::winograd_conv3x3_few_tiles(x, module_weight, bias, kernels::WinogradTile::f4x4);
  };
  at::Tensor y_onednn, y_direct, y_winograd, y_winograd_few_tiles, y_winograd_f4;
  // As the UNet's calls run them: freed blocks kept for the next call, else fresh blocks' page faults count
  // against whichever kernel allocates more (Winograd's transformed weights, oneDNN's re-laid-out ones).
  runtime::FreedMemoryReuse reuse;
  for (int i = 0; i < s.warmup + s.runs; ++i) {
    const bool timed = i >= s.warmup;
    const double t = seconds(run_onednn, y_onednn);
    if (timed) r.onednn_s.push_back(t);
    if (direct) {
      const double td = seconds(run_direct, y_direct);
      if (timed) r.direct_s.push_back(td);
    }
    if (winograd) {
      const double tw = seconds(run_winograd, y_winograd);
      if (timed) r.winograd_s.push_back(tw);
      const double th = seconds(run_few_tiles, y_winograd_few_tiles);
      if (timed) r.winograd_few_tiles_s.push_back(th);
      const double tf = seconds(run_f4, y_winograd_f4);
      if (timed) r.winograd_f4_s.push_back(tf);
    }
  }
  if (direct) r.direct_max_abs_diff = (y_direct - y_onednn).abs().max().item<double>();
  if (winograd) r.winograd_max_abs_diff = (y_winograd - y_onednn).abs().max().item<double>();
  if (winograd) r.winograd_few_tiles_max_abs_diff = (y_winograd_few_tiles - y_onednn).abs().max().item<double>();
  if (winograd) r.winograd_f4_max_abs_diff = (y_winograd_f4 - y_onednn).abs().max().item<double>();
  return r;
}

}  // namespace tide::bench
