// One convolution (channels-last input, padding kernel_size / 2), timed three ways, alternating in one process
// on the same inputs: oneDNN's kernel through at::conv2d with a channels-last weight (which it re-lays out
// every call), tide's direct kernel on the weight stored HWIO (kernels/direct_conv.h), and for 3×3 at stride
// 1 the Winograd kernels: the chunked one including its weight transform, as the Conv2d module runs it every
// call, and the one for few tiles that transforms the weight as the module stores it (HWIO where the direct
// kernel reads it, else channels last) panel by panel, with 2×2 and with 4×4 output tiles. Freed
// memory is kept between calls, as in the UNet (runtime::FreedMemoryReuse). Defaults:
// the VAE decoder's mid block at 512×512 (512 channels on 64×64, batch 1).
// With `backward`, the input gradient as frozen-weight training computes it instead, the weight channels last
// as training keeps it: oneDNN's backward-data kernel, the direct kernel, and for 3×3 at stride 1 both
// Winograd kernels on the flipped, transposed weight (kernels/conv_input_gradient.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tide::bench {

struct ConvBenchSettings {
  int64_t batch = 1, in_channels = 512, out_channels = 512, size = 64;  // size: height = width
  int64_t kernel_size = 3, stride = 1;
  int runs = 5, warmup = 1;
  bool backward = false;  // time the input gradient instead of the forward
};

struct ConvBenchResult {
  std::vector<double> onednn_s, direct_s, winograd_s, winograd_few_tiles_s, winograd_f4_s;  // direct_s: empty
                                            // where the CPU or shape has no direct kernel; winograd_s: empty
                                            // unless 3×3 at stride 1, as are winograd_few_tiles_s and
                                            // winograd_f4_s (the few-tiles kernel with F(4×4, 3×3) tiles)
  double flops = 0;                 // the convolution's multiply-adds × 2
  double direct_max_abs_diff = 0;   // against oneDNN's output
  double winograd_max_abs_diff = 0;
  double winograd_few_tiles_max_abs_diff = 0;
  double winograd_f4_max_abs_diff = 0;
  bool winograd_pays_off = false;       // whether the Conv2d module would take the chunked Winograd path
  bool winograd_few_tiles_pays_off = false;  // ... or the few-tiles one, for this shape
  std::string path;  // the kernel the Conv2d module (backward: the frozen-weight backward) takes: "oneDNN",
                     // "direct", "winograd, chunked", "winograd, few tiles" or "winograd F(4x4), few tiles"
};

ConvBenchResult run_conv_bench(const ConvBenchSettings& settings);

}  // namespace tide::bench
