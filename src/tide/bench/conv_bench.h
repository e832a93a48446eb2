// One 3×3 convolution (stride 1, padding 1, channels-last input), the Winograd kernel vs oneDNN's direct
// kernel through at::conv2d, alternating in one process on the same inputs. The Winograd side includes its
// weight transform, as the Conv2d module runs it every call. Defaults: the VAE decoder's mid block at
// 512×512 (512 channels on 64×64, batch 1).
#pragma once
#include <cstdint>
#include <vector>

namespace tide::bench {

struct ConvBenchSettings {
  int64_t batch = 1, in_channels = 512, out_channels = 512, size = 64;  // size: height = width
  int runs = 5, warmup = 1;
};

struct ConvBenchResult {
  std::vector<double> winograd_s, direct_s;
  double flops = 0;          // the direct convolution's multiply-adds × 2
  double max_abs_diff = 0;   // Winograd vs direct outputs
  bool pays_off = false;     // whether the Conv2d module would take the Winograd path for this shape
};

ConvBenchResult run_conv_bench(const ConvBenchSettings& settings);

}  // namespace tide::bench
