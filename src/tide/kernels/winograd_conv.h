// Winograd F(2×2, 3×3) convolution for CPUs: a 3×3, stride 1, padding 1 convolution computed as 16
// matrix products on transformed 4×4 input tiles, which needs 16 multiply-adds per 2×2 output pixels and
// channel pair instead of 36 (2.25× fewer). The VAE decoder is nearly all such convolutions at high
// resolution, where oneDNN's direct kernels already run at ~75% of peak: fewer multiplies is the lever left.
//
// Tiles are processed a chunk at a time (transform the chunk's input, 16 matrix products, transform back), so
// the transformed tensors stay in cache and the memory they need is bounded by the chunk, not the image.
// F(2×2, 3×3)'s transforms only add and subtract (and halve in the weight transform), so its rounding error
// is within a small factor of a direct convolution's. The few-tiles kernel also runs F(4×4, 3×3) tiles
// (kernels/winograd_tile.h): 36 products per 4×4 outputs instead of 64, for several times the error; it is
// the kernel of choice from 16 of its tiles (winograd_f4_pays_off).
#pragma once
#include <ATen/ATen.h>

namespace tide::kernels {

// True when winograd_conv3x3() computes this convolution: float32 CPU input [N, C, H, W], weight
// [K, C, 3, 3] (any dtype: the caller widens it for winograd_weight_transform()), stride 1, padding 1, no
// gradient needed.
bool winograd_conv3x3_supported(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding);

// Whether winograd_conv3x3() is expected to beat oneDNN's direct convolution for this shape. Measured on
// AVX2/AVX-512 with 2 threads against oneDNN at 90% of the FMA peak, it does where the maps hold at least
// half as many 2×2 tiles as there are channels, or at least 256 tiles: 1.4–1.9× on the VAE decoder's
// convolutions, 1.65× at 320 channels on 64×64 (batch 2), 1.5× at 640 on 48×48, 1.2× at 640 on 32×32; on the
// AVX2 EPYC of 2026-12-06 1.4× at 1280 channels on 32×32 (batch 2), 1.1× on 24×24 (288 tiles) and at 1280 on
// 32×32 at batch 1 (256 tiles). It loses where the transformed weights (16·C·K floats, streamed once per chunk
// of tiles) outweigh fewer tiles (0.7× at 1280 channels on 16×16, batch 2: 128 tiles), the products are too
// thin (0.4× for 3 output channels), or the convolution is too small for the per-call setup (0.7× at 32
// channels on 32×32; 1.08× at 64 on 64×64, 1.5·10⁸ multiply-adds, just above the 2²⁷ required). False
// without AVX2/FMA.
bool winograd_conv3x3_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                               int64_t width);

// The output tile of the few-tiles kernel: F(2×2, 3×3), or F(4×4, 3×3) with 36 instead of 64 products per 4×4
// outputs and channel pair but several times the rounding error (kernels/winograd_tile.h).
enum class WinogradTile { f2x2, f4x4 };

// Column panels of the packed weights: the width of gemm_f32's widest register tile.
constexpr int64_t kWinogradPanel = 40;

// The weight transform G·g·Gᵀ of every (output, input) channel pair, packed for the products: for each of
// the 16 tile positions the [C, K] matrix is cut into column panels of kWinogradPanel columns (the last
// one narrower when K is not a multiple), each stored contiguously as [C, width], so that a product
// streams its panel sequentially (1.2× faster products than reading the panels out of [C, K] rows).
struct WinogradWeights {
  at::Tensor packed;  // [16, C·K]
  int64_t in_channels = 0, out_channels = 0;
};

// [K, C, 3, 3] -> the packed transformed weights.
WinogradWeights winograd_weight_transform(const at::Tensor& weight);

// conv2d(x, weight, bias, stride 1, padding 1) with the weights already transformed.
// x: [N, C, H, W] in any memory format (made channels last); bias: [K] or undefined.
// -> [N, K, H, W], channels last. `tiles_per_chunk`: 0 picks one that keeps a chunk's transformed input and
// products within a few MiB.
at::Tensor winograd_conv3x3(const at::Tensor& x, const WinogradWeights& u, const at::Tensor& bias,
                            int64_t tiles_per_chunk = 0);

// Whether winograd_conv3x3_few_tiles() (and winograd_conv3x3_input_gradient()) are expected to beat the
// direct kernel (kernels/direct_conv.h), oneDNN and winograd_conv3x3() for this shape: from 32 tiles (8×8
// maps at batch 2) up to 48 MiB of buffers, at least 16 channels, on CPUs with AVX2 and FMA.
bool winograd_conv3x3_few_tiles_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                                         int64_t width);

// Whether the few-tiles kernel with F(4×4, 3×3) tiles (WinogradTile::f4x4) is expected to beat every other
// kernel for this shape: from 16 of its tiles (16×16 maps at batch 1) and 16 channels, on CPUs with AVX2 and
// FMA; maps of more tiles than its buffers' 48 MiB hold go through a group of tiles at a time. Measured on the
// AVX2 EPYC of 2026-12-06 with 2 threads against the best of the other kernels (`tide bench --conv`): 1.3–1.7×
// on SD 1.5's UNet maps (320 channels on 32×32 and 64×64, 640 on 16×16 and 32×32, 1280 on 16×16), 1.0–1.2× on
// the VAE decoder's large maps; it loses to the direct kernel on 8 tiles (1280 channels on 8×8, batch 2).
bool winograd_f4_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height, int64_t width);

// The output_tile × output_tile tiles (2 for F(2×2, 3×3), 4 for F(4×4, 3×3)) that cut `batch` maps of
// height × width into.
int64_t winograd_tiles(int64_t batch, int64_t height, int64_t width, int64_t output_tile = 2);

// Whether winograd_conv3x3_few_tiles()'s transformed input (16·tiles·C floats, read once per column panel of
// the weight) fits in 16 MiB, a last-level cache. Beyond it that kernel runs from memory and the chunked one,
// where it pays, is faster (AVX2 EPYC, 2 threads, GFLOP/s chunked vs few tiles): 640 channels on 32×32 at
// batch 2 207 vs 167, 320 on 64×64 at batch 1 221 vs 150, its input gradient 230 vs 170; within it the few-tiles
// kernel wins (320 channels on 32×32, batch 2: 215 vs 199; batch 1: 228 vs 130).
bool winograd_few_tiles_input_fits_cache(int64_t batch, int64_t in_channels, int64_t height, int64_t width);

// Whether the few-tiles kernel is the Winograd kernel to take: it pays off and, where the chunked one pays too
// (`chunked_pays`), its transformed input fits the cache. The forward's and the input gradient's choice alike.
bool winograd_few_tiles_preferred(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                                  int64_t width, bool chunked_pays);

// conv2d(x, weight, bias, stride 1, padding 1) for maps with few tiles and many channels, where
// winograd_conv3x3() would stream its transformed weights (16/9 of the weight) once per chunk after writing
// them: every tile is transformed first, then each worker transforms a panel of the weights a block of
// input channels at a time, in cache, and multiplies all tiles by it, so the weights are read once, as a
// direct convolution reads them, for 16 instead of 36 multiply-adds per 2×2 outputs and channel pair.
// x: [N, C, H, W] in any memory format; weight: float32 [K, C, 3, 3], read in place — fast where its output
// channels (HWIO, kernels/direct_conv.h) or its input channels (channels last) are consecutive; bias: [K] or
// undefined. -> [N, K, H, W], channels last. Needs α²·tiles·(C + K) floats of buffers (α = 4 for F(2×2), 6 for
// F(4×4)), up to 48 MiB: more tiles go through `max_group_tiles` (0: as many as that holds) at a time.
at::Tensor winograd_conv3x3_few_tiles(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      WinogradTile tile = WinogradTile::f2x2, int64_t max_group_tiles = 0);

// The input gradient of conv2d(x, weight, stride 1, padding 1) by the same kernel, the weight read in place,
// flipped and transposed: grad [N, K, H, W] (any memory format); weight as above. -> dx [N, C, H, W],
// channels last. Where it pays: winograd_conv3x3_few_tiles_pays_off(N, K, C, H, W).
at::Tensor winograd_conv3x3_input_gradient(const at::Tensor& grad, const at::Tensor& weight,
                                           WinogradTile tile = WinogradTile::f2x2);

}  // namespace tide::kernels
