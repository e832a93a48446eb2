// What a Winograd F(m×m, 3×3) convolution kernel needs from its tile size: the three transforms, each run
// along channels (contiguous in channels-last tensors). kernels/winograd_conv.cpp drives them for F(2×2, 3×3)
// and F(4×4, 3×3) alike.
#pragma once
#include "tide/kernels/weight_taps.h"

#include <cstdint>

namespace tide::kernels {

struct WinogradTileKernels {
  int output_tile;  // m: each tile gives m×m output pixels
  int input_tile;   // m + 2: ... from (m + 2)×(m + 2) input pixels, (m + 2)² products per channel pair

  // V = Bᵀ·d·B for channels [0, C): d[i·α + j] points at the channels of the tile's input pixel (i, j) (a zero
  // row outside the image), v[ξ·v_stride + c] receives position ξ = i·α + j (α = input_tile).
  void (*input_transform)(const float* const* d, int64_t C, float* v, int64_t v_stride);

  // Y = Aᵀ·M·A + bias for channels [0, K): m[ξ·m_stride + k] holds position ξ of the products; y[a·m + b]
  // points at output pixel (a, b) of the tile (null where it falls outside the image).
  void (*output_transform)(const float* m, int64_t m_stride, const float* bias, int64_t K, float* const* y);

  // Rows [a0, a1) of U = G·g·Gᵀ (positions ξ = a·α + b, b < α) for weight rows [r0, r0 + rows) and columns
  // [k0, k0 + width): u[((a - a0)·α + b)·rows·width + (r - r0)·width + (k - k0)].
  void (*weight_transform_rows)(const WeightTaps& w, int a0, int a1, int64_t r0, int64_t rows, int64_t k0,
                                int64_t width, float* u);
};

// F(4×4, 3×3): 36 products per 4×4 outputs and channel pair instead of F(2×2, 3×3)'s 64 (16 per 2×2), 4×
// fewer than a direct convolution's 144. Its transforms multiply by up to 8 (output) and 5 (input), so its
// rounding error is several times F(2×2, 3×3)'s (measured in tests/unit/test_winograd_conv.cpp).
const WinogradTileKernels& winograd_f4x4_kernels();

}  // namespace tide::kernels
