#include "tide/kernels/conv_forward_kernel.h"

#include "tide/kernels/direct_conv.h"
#include "tide/kernels/matmul_f32.h"
#include "tide/kernels/winograd_conv.h"

namespace tide::kernels {

ConvKernel conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding,
                                 bool winograd, bool winograd_f4, bool direct, bool matmul_1x1) {
  const bool direct_here = direct && direct_conv2d_supported(x, weight, stride, padding);
  const bool weight_in_place = weight.is_floating_point() && (direct_here || weight.is_contiguous(at::MemoryFormat::ChannelsLast));
  const bool winograd_here = winograd && winograd_conv3x3_supported(x, weight, stride, padding);
  // F(4×4) tiles from 16 of them: 1.3–1.7× the best other kernel on the UNet's maps, the direct kernel's small
  // maps with large weights included (1280 channels on 16×16 at batch 1).
  if (winograd_here && winograd_f4 && weight_in_place &&
      winograd_f4_pays_off(x.size(0), x.size(1), weight.size(0), x.size(2), x.size(3)))
    return ConvKernel::winograd_f4;
  // Small maps with large weights: the direct kernel even where Winograd would pay.
  if (direct_here && direct_conv2d_preferred(x, weight, stride, padding)) return ConvKernel::direct;
  if (winograd_here) {
    // Maps of up to a few hundred tiles (SD 1.5's UNet at 256 px, its deeper levels at 512): the weights
    // transformed panel by panel as they are read (HWIO, or channels last as training keeps them), 1.1–1.7×
    // the direct kernel, unless its transformed input outgrows the cache where the chunked kernel pays
    // (kernels/winograd_conv.h).
    const bool chunked = winograd_conv3x3_pays_off(x.size(0), x.size(1), weight.size(0), x.size(2), x.size(3));
    if (weight_in_place && winograd_few_tiles_preferred(x.size(0), x.size(1), weight.size(0), x.size(2), x.size(3), chunked))
      return ConvKernel::winograd_few_tiles;
    if (chunked) return ConvKernel::winograd_chunked;
  }
  if (direct_here) return ConvKernel::direct;
  if (matmul_1x1 && stride == 1 && padding == 0 && conv1x1_f32_supported(x, weight) && conv1x1_as_matmul_pays_off(x))
    return ConvKernel::matmul_1x1;
  return ConvKernel::onednn;
}

const char* conv_kernel_name(ConvKernel kernel) {
  switch (kernel) {
    case ConvKernel::winograd_few_tiles: return "winograd, few tiles";
    case ConvKernel::winograd_f4: return "winograd F(4x4), few tiles";
    case ConvKernel::winograd_chunked: return "winograd, chunked";
    case ConvKernel::direct: return "direct";
    case ConvKernel::matmul_1x1: return "oneDNN matmul (1x1)";
    case ConvKernel::onednn: break;
  }
  return "oneDNN";
}

}  // namespace tide::kernels
