// The Winograd F(2×2, 3×3) convolution against conv2d on random inputs: odd and even sizes, one and
// several chunks, both memory formats, with and without bias; its rounding error is compared with that of
// libtorch's float32 convolution, both measured against a float64 reference.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <iostream>

#include <c10/core/InferenceMode.h>

#include "test_support.h"
#include "tide/kernels/conv_forward_kernel.h"
#include "tide/kernels/conv_input_gradient.h"
#include "tide/kernels/direct_conv.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/models/autoencoder_kl_config.h"
#include "tide/nn/layers.h"
#include "tide/runtime/optimizations.h"

namespace {

struct ConvShape {
  int64_t n, c, k, h, w;
};

TEST(WinogradConv, MatchesConv2dOnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const ConvShape shapes[] = {{1, 1, 1, 1, 1},  {1, 3, 5, 2, 2},    {2, 4, 6, 7, 9},    {1, 17, 9, 13, 8},
                              {2, 64, 32, 16, 15}, {1, 128, 128, 20, 20}, {1, 32, 3, 33, 31}};
  for (const auto& s : shapes) {
    const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
    const at::Tensor weight = at::randn({s.k, s.c, 3, 3}, gen) / std::sqrt(9.0 * s.c);
    const at::Tensor bias = at::randn({s.k}, gen);
    const auto u = tide::kernels::winograd_weight_transform(weight);
    for (bool with_bias : {true, false}) {
      const at::Tensor b = with_bias ? bias : at::Tensor();
      const at::Tensor exact = at::conv2d(x.to(at::kDouble), weight.to(at::kDouble),
                                          with_bias ? bias.to(at::kDouble) : at::Tensor(), 1, 1);
      const double direct_error = tide::testing::max_abs_diff(at::conv2d(x, weight, b, 1, 1), exact);
      for (int64_t chunk : {0, 1, 7, 64}) {
        for (bool nhwc : {true, false}) {
          const at::Tensor input = nhwc ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
          const at::Tensor got = tide::kernels::winograd_conv3x3(input, u, b, chunk);
          ASSERT_EQ(got.sizes(), exact.sizes());
          EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
          // A few times the direct convolution's own rounding error, and small in absolute terms.
          const double error = tide::testing::max_abs_diff(got, exact);
          EXPECT_LT(error, 4 * direct_error + 1e-6)
              << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h << " w=" << s.w << " chunk=" << chunk;
          EXPECT_LT(error, 2e-5);
        }
      }
    }
  }
}

// The few-tiles kernel, which transforms the weight panel by panel as it reads it (HWIO, channels last or
// NCHW): input-channel blocks (more than 64,
// 128 or 256 channels), panels narrower than 32 and than 8 output channels (the scalar transform), odd maps,
// one tile; with 1 and 3 threads and few or many tiles, which split the positions' rows differently (1, 2 or
// 4 per work item).
TEST(WinogradConv, FewTilesKernelMatchesConv2dOnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const ConvShape shapes[] = {{1, 1, 1, 1, 1},      {1, 3, 5, 2, 2},   {2, 4, 6, 7, 9},    {1, 17, 12, 13, 8},
                              {2, 64, 40, 16, 15},  {1, 300, 44, 5, 6}, {2, 520, 72, 4, 4}, {1, 16, 3, 33, 31},
                              {1, 150, 136, 9, 10}, {1, 24, 392, 6, 6},  {2, 24, 136, 22, 22}, {1, 20, 104, 40, 40}};
  const int threads_before = at::get_num_threads();
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    for (const auto& s : shapes) {
      const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
      const at::Tensor weight = at::randn({s.k, s.c, 3, 3}, gen) / std::sqrt(9.0 * s.c);
      // The layouts it reads in place: HWIO (inference), channels last (training), and any other (slower).
      const at::Tensor layouts[] = {tide::kernels::to_hwio(weight), weight.contiguous(at::MemoryFormat::ChannelsLast),
                                    weight};
      const at::Tensor bias = at::randn({s.k}, gen);
      for (bool with_bias : {true, false}) {
        const at::Tensor b = with_bias ? bias : at::Tensor();
        const at::Tensor exact = at::conv2d(x.to(at::kDouble), weight.to(at::kDouble),
                                            with_bias ? bias.to(at::kDouble) : at::Tensor(), 1, 1);
        const double direct_error = tide::testing::max_abs_diff(at::conv2d(x, weight, b, 1, 1), exact);
        for (int layout = 0; layout < 3; ++layout) {
          const bool nhwc = layout != 1;  // both input formats, the second with the channels-last weight
          const at::Tensor input = nhwc ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
          const at::Tensor got = tide::kernels::winograd_conv3x3_few_tiles(input, layouts[layout], b);
          ASSERT_EQ(got.sizes(), exact.sizes());
          EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
          const double error = tide::testing::max_abs_diff(got, exact);
          EXPECT_LT(error, 4 * direct_error + 1e-6) << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h
                                                    << " w=" << s.w << " threads=" << threads << " layout=" << layout;
          EXPECT_LT(error, 2e-5);
        }
      }
    }
  }
  at::set_num_threads(threads_before);
  // Not float32, or not this input's channels: an error, not a wrong answer.
  const at::Tensor x = at::randn({1, 8, 6, 6}), w = at::randn({16, 8, 3, 3});
  EXPECT_THROW(tide::kernels::winograd_conv3x3_few_tiles(x, tide::kernels::to_hwio(w).to(at::kHalf), at::Tensor()), c10::Error);
  EXPECT_THROW(tide::kernels::winograd_conv3x3_few_tiles(at::randn({1, 9, 6, 6}), tide::kernels::to_hwio(w), at::Tensor()),
               c10::Error);
}

// The few-tiles kernel with F(4×4, 3×3) tiles: the same shapes and layouts as above, maps that are not a
// multiple of 4 (partial tiles), channel counts that leave a scalar tail in every transform (input channels,
// output channels and the weight's rows not multiples of 8), groups of tiles (7 at a time and the default);
// forward and input gradient. Its transforms multiply by up to 8 and its points ±2 lose more bits, so it is held
// to 64× libtorch's own float32 error against float64 and to 3·10⁻⁵ of the output's largest value (measured: up
// to 1.1·10⁻⁵ on every CPU so far). libtorch's error, the yardstick, depends on the path libtorch takes on the
// CPU: the same kernel errors came to up to 33× of it on an AVX2 EPYC and up to 48.4× (one input gradient) on
// an AVX512-VNNI Xeon, whose libtorch convolutions round less; F(2×2): 4×.
TEST(WinogradConv, F4x4TilesMatchConv2dOnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const ConvShape shapes[] = {{1, 1, 1, 1, 1},     {1, 3, 5, 2, 2},     {2, 4, 6, 7, 9},      {1, 17, 12, 13, 8},
                              {2, 64, 40, 16, 15}, {1, 300, 44, 5, 6},  {2, 520, 72, 4, 4},   {1, 16, 3, 33, 31},
                              {1, 150, 136, 9, 10}, {1, 24, 392, 6, 6}, {2, 24, 136, 22, 22}, {1, 20, 104, 40, 40}};
  const int threads_before = at::get_num_threads();
  double worst_ratio = 0, worst_relative = 0;
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    for (const auto& s : shapes) {
      const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
      const at::Tensor weight = at::randn({s.k, s.c, 3, 3}, gen) / std::sqrt(9.0 * s.c);
      const at::Tensor layouts[] = {tide::kernels::to_hwio(weight), weight.contiguous(at::MemoryFormat::ChannelsLast),
                                    weight};
      const at::Tensor bias = at::randn({s.k}, gen);
      const at::Tensor exact = at::conv2d(x.to(at::kDouble), weight.to(at::kDouble), bias.to(at::kDouble), 1, 1);
      const double direct_error = tide::testing::max_abs_diff(at::conv2d(x, weight, bias, 1, 1), exact);
      // The input gradient of the same convolution: a gradient [N, K, H, W] back to [N, C, H, W].
      const at::Tensor grad = at::randn({s.n, s.k, s.h, s.w}, gen);
      const at::Tensor grad_exact = std::get<0>(at::convolution_backward(
          grad.to(at::kDouble), x.to(at::kDouble), weight.to(at::kDouble), c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false,
          {0, 0}, 1, {true, false, false}));
      const double grad_direct_error = tide::testing::max_abs_diff(
          std::get<0>(at::convolution_backward(grad, x, weight, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                               {true, false, false})),
          grad_exact);
      for (int layout = 0; layout < 3; ++layout)
        for (int64_t group : {int64_t(0), int64_t(7)}) {
          const at::Tensor input = layout != 1 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
          const at::Tensor got = tide::kernels::winograd_conv3x3_few_tiles(input, layouts[layout], bias,
                                                                           tide::kernels::WinogradTile::f4x4, group);
          ASSERT_EQ(got.sizes(), exact.sizes());
          EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
          const double error = tide::testing::max_abs_diff(got, exact);
          worst_ratio = std::max(worst_ratio, error / (direct_error + 1e-7));
          worst_relative = std::max(worst_relative, error / exact.abs().max().item<double>());
          EXPECT_LT(error, 64 * direct_error + 1e-6) << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h
                                                     << " w=" << s.w << " threads=" << threads << " layout=" << layout
                                                     << " group=" << group;
          EXPECT_LT(error, 3e-5 * exact.abs().max().item<double>());
          if (group != 0 || layout == 2) continue;  // the gradient reads HWIO and channels-last weights
          const at::Tensor dx = tide::kernels::winograd_conv3x3_input_gradient(grad, layouts[layout],
                                                                               tide::kernels::WinogradTile::f4x4);
          ASSERT_EQ(dx.sizes(), x.sizes());
          const double grad_error = tide::testing::max_abs_diff(dx, grad_exact);
          worst_ratio = std::max(worst_ratio, grad_error / (grad_direct_error + 1e-7));
          worst_relative = std::max(worst_relative, grad_error / grad_exact.abs().max().item<double>());
          EXPECT_LT(grad_error, 3e-5 * grad_exact.abs().max().item<double>());
          EXPECT_LT(grad_error, 64 * grad_direct_error + 1e-6)
              << "input gradient: n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h << " w=" << s.w
              << " threads=" << threads << " layout=" << layout;
        }
    }
  }
  at::set_num_threads(threads_before);
  std::cout << "F(4x4) tiles: worst error / libtorch float32 error = " << worst_ratio
            << ", worst error / largest output = " << worst_relative << "\n";
  // Not float32, or not this input's channels: an error, not a wrong answer.
  const at::Tensor x = at::randn({1, 8, 6, 6}), w = at::randn({16, 8, 3, 3});
  EXPECT_THROW(tide::kernels::winograd_conv3x3_few_tiles(x, tide::kernels::to_hwio(w).to(at::kHalf), at::Tensor(),
                                                         tide::kernels::WinogradTile::f4x4),
               c10::Error);
  EXPECT_THROW(tide::kernels::winograd_conv3x3_few_tiles(at::randn({1, 9, 6, 6}), tide::kernels::to_hwio(w),
                                                         at::Tensor(), tide::kernels::WinogradTile::f4x4),
               c10::Error);
}

// F(4×4) tiles from 16 of them and 16 channels, ahead of every other kernel, forward and input gradient; the
// direct kernel keeps maps of fewer tiles; without the switch the F(2×2) rule stands.
TEST(WinogradConv, F4x4TilesFromSixteenTiles) {
  using tide::kernels::ConvKernel;
  if (!tide::kernels::winograd_f4_pays_off(2, 320, 320, 32, 32)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  EXPECT_TRUE(tide::kernels::winograd_f4_pays_off(1, 1280, 1280, 16, 16));   // 16 tiles
  EXPECT_TRUE(tide::kernels::winograd_f4_pays_off(1, 512, 512, 512, 512));   // the VAE decoder's largest maps
  EXPECT_TRUE(tide::kernels::winograd_f4_pays_off(1, 16, 16, 13, 13));       // 16 tiles, partial ones included
  EXPECT_FALSE(tide::kernels::winograd_f4_pays_off(2, 1280, 1280, 8, 8));    // 8 tiles
  EXPECT_FALSE(tide::kernels::winograd_f4_pays_off(1, 640, 640, 12, 12));    // 9 tiles
  EXPECT_FALSE(tide::kernels::winograd_f4_pays_off(1, 128, 3, 64, 64));      // 3 channels
  auto forward = [](int64_t batch, int64_t in, int64_t out, int64_t size, bool f4) {
    const at::Tensor x = at::empty({batch, in, size, size}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor hwio = tide::kernels::to_hwio(at::empty({out, in, 3, 3}));
    return tide::kernels::conv2d_forward_kernel(x, hwio, 1, 1, /*winograd=*/true, f4, /*direct=*/true, /*matmul_1x1=*/true);
  };
  EXPECT_EQ(forward(2, 320, 320, 32, true), ConvKernel::winograd_f4);     // SD 1.5 at 256 px, first level
  EXPECT_EQ(forward(2, 640, 640, 32, true), ConvKernel::winograd_f4);     // ... at 512 px, second level
  EXPECT_EQ(forward(1, 1280, 1280, 16, true), ConvKernel::winograd_f4);   // over the direct kernel's 16 MiB
  EXPECT_EQ(forward(2, 1280, 1280, 8, true), ConvKernel::direct);
  EXPECT_EQ(forward(2, 320, 320, 32, false), ConvKernel::winograd_few_tiles);
  EXPECT_EQ(forward(1, 1280, 1280, 16, false), ConvKernel::direct);
  EXPECT_STREQ(tide::kernels::conv_kernel_name(ConvKernel::winograd_f4), "winograd F(4x4), few tiles");
  auto backward = [](int64_t channels, int64_t size, bool f4) {
    const at::Tensor grad = at::empty({1, channels, size, size}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor weight = at::empty({channels, channels, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
    return tide::kernels::input_gradient_kernel(grad, weight, 1, 1, grad.sizes(), /*winograd=*/true, /*direct=*/true, f4);
  };
  EXPECT_EQ(backward(320, 64, true), ConvKernel::winograd_f4);  // training at 512 px, first level
  EXPECT_EQ(backward(1280, 8, true), ConvKernel::direct);
  EXPECT_EQ(backward(320, 64, false), ConvKernel::winograd_chunked);
  // The input gradient it takes is F(4×4)'s, bit for bit.
  const at::Tensor grad = at::randn({1, 32, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor weight = at::randn({32, 24, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> input_size{1, 24, 16, 16};
  EXPECT_TRUE(tide::kernels::conv2d_input_gradient(grad, weight, 1, 1, input_size, true, true, true)
                  .equal(tide::kernels::winograd_conv3x3_input_gradient(grad, weight, tide::kernels::WinogradTile::f4x4)));
}

TEST(WinogradConv, SupportedOnlyForStrideOnePaddingOneFloatWithoutGrad) {
  const at::Tensor x = at::randn({1, 4, 8, 8}), w = at::randn({2, 4, 3, 3});
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_supported(x, w, 1, 1));
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_supported(x, w, 2, 1));
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_supported(x, w, 1, 0));
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_supported(x, at::randn({2, 4, 1, 1}), 1, 1));
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_supported(x.to(at::kDouble), w.to(at::kDouble), 1, 1));
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_supported(x, w.clone().requires_grad_(), 1, 1));
}

TEST(WinogradConv, RejectsWeightsOfTheWrongShape) {
  EXPECT_THROW(tide::kernels::winograd_weight_transform(at::randn({2, 4, 1, 1})), c10::Error);
  const auto u = tide::kernels::winograd_weight_transform(at::randn({2, 4, 3, 3}));
  EXPECT_THROW(tide::kernels::winograd_conv3x3(at::randn({1, 5, 8, 8}), u, at::Tensor()), c10::Error);
}

TEST(WinogradConv, PaysOffOnLargeMapsOnly) {
  if (!tide::kernels::winograd_conv3x3_pays_off(1, 512, 512, 64, 64)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(1, 128, 128, 512, 512));    // VAE decoder's last level
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(2, 320, 320, 64, 64));      // UNet's first level
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(2, 640, 640, 48, 48));      // SD 2.1's second level at 768
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(2, 1280, 1280, 24, 24));    // and its third: 288 tiles
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(2, 2560, 1280, 32, 32));    // SDXL's third level at 1024
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_pays_off(2, 1280, 1280, 16, 16));   // SD 1.5's deepest levels
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_pays_off(1, 128, 3, 512, 512));     // conv_out: 3 channels
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_pays_off(1, 32, 32, 32, 32));       // too little work
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_pays_off(1, 64, 64, 64, 64));
}

TEST(WinogradConv, FewTilesKernelPaysOffFromThirtyTwoTilesUpToItsBuffers) {
  if (!tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 640, 640, 16, 16)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 1280, 1280, 8, 8));   // SD 1.5 at 256 px: 32 tiles
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 512, 512, 32, 32));   // VAE decoder's mid block, 256 px
  EXPECT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 1280, 1280, 24, 24)); // SD 2.1 at 768: 47 MiB of buffers
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 1280, 1280, 4, 4));  // 8 tiles
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 320, 320, 64, 64));  // 80 MiB: the chunked kernel's
  EXPECT_FALSE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 128, 3, 64, 64));    // 3 channels
}

// Without F(4×4) tiles: where the few-tiles kernel's transformed input outgrows the cache and the chunked kernel
// pays, the chunked one computes the forward and the input gradient; within the cache the few-tiles one; and
// large maps with weights stored HWIO for small ones go to the chunked kernel, not to the direct one (SDXL's
// third level).
TEST(WinogradConv, ChunkedKernelWhereTheFewTilesInputOutgrowsTheCache) {
  using tide::kernels::ConvKernel;
  if (!tide::kernels::winograd_conv3x3_pays_off(1, 64, 64, 64, 64)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  EXPECT_TRUE(tide::kernels::winograd_few_tiles_input_fits_cache(2, 320, 32, 32));   // 10 MiB
  EXPECT_FALSE(tide::kernels::winograd_few_tiles_input_fits_cache(2, 640, 32, 32));  // 20 MiB
  EXPECT_FALSE(tide::kernels::winograd_few_tiles_input_fits_cache(1, 320, 64, 64));
  auto forward = [](int64_t batch, int64_t in, int64_t out, int64_t size) {
    const at::Tensor x = at::empty({batch, in, size, size}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor hwio = tide::kernels::to_hwio(at::empty({out, in, 3, 3}));
    return tide::kernels::conv2d_forward_kernel(x, hwio, 1, 1, /*winograd=*/true, /*winograd_f4=*/false, /*direct=*/true,
                                                /*matmul_1x1=*/true);
  };
  EXPECT_EQ(forward(2, 320, 320, 32), ConvKernel::winograd_few_tiles);  // SD 1.5 at 256 px, first level
  EXPECT_EQ(forward(2, 640, 320, 32), ConvKernel::winograd_chunked);    // its first up block's concatenated input
  EXPECT_EQ(forward(2, 640, 640, 32), ConvKernel::winograd_chunked);    // SD 1.5 at 512 px, second level
  EXPECT_EQ(forward(2, 1280, 1280, 32), ConvKernel::winograd_chunked);  // SDXL at 1024 px, third level
  EXPECT_EQ(forward(2, 640, 640, 16), ConvKernel::winograd_few_tiles);
  EXPECT_EQ(forward(2, 1280, 1280, 8), ConvKernel::direct);
  auto backward = [](int64_t channels, int64_t size) {
    const at::Tensor grad = at::empty({1, channels, size, size}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor weight = at::empty({channels, channels, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
    return tide::kernels::input_gradient_kernel(grad, weight, 1, 1, grad.sizes(), /*winograd=*/true, /*direct=*/true,
                                                /*winograd_f4=*/false);
  };
  EXPECT_EQ(backward(320, 64), ConvKernel::winograd_chunked);  // training at 512 px, first level
  EXPECT_EQ(backward(320, 32), ConvKernel::winograd_few_tiles);
  EXPECT_EQ(backward(640, 32), ConvKernel::winograd_few_tiles);
}

// The Conv2d module takes the Winograd path where it pays off and the optimization is on, and the direct
// kernel's or oneDNN's otherwise: close results, but not the same bits, which shows which path ran.
TEST(WinogradConv, Conv2dModuleUsesItWhereItPaysOff) {
  if (!tide::kernels::winograd_conv3x3_pays_off(1, 64, 64, 64, 64)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  c10::InferenceMode inference;
  tide::nn::Conv2d conv(64, 64, 3, 1, 1);
  tide::nn::store_conv_weights_for_current_layout(*conv);
  const at::Tensor x = at::randn({1, 64, 64, 64}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor weight = conv->weight.contiguous(at::MemoryFormat::ChannelsLast);
  // By default F(4×4) tiles, bit for bit the kernel's answer; the rest of this test without them.
  EXPECT_TRUE(conv->forward(x).equal(
      tide::kernels::winograd_conv3x3_few_tiles(x, conv->weight, conv->bias, tide::kernels::WinogradTile::f4x4)));
  tide::runtime::OptimizationsGuard f2x2(tide::runtime::Optimizations().without("winograd_f4"));
  const at::Tensor with = conv->forward(x);
  at::Tensor without;
  {
    tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("winograd,direct_conv"));
    without = conv->forward(x);
  }
  const at::Tensor onednn = at::conv2d(x, weight, conv->bias, 1, 1);
  EXPECT_TRUE(without.equal(onednn));
  EXPECT_FALSE(with.equal(onednn));
  EXPECT_LT(tide::testing::max_abs_diff(with, onednn), 1e-5);
  {
    tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("winograd,winograd_f4"));
    EXPECT_FALSE(conv->forward(x).equal(with));  // the direct kernel
  }
  // Which Winograd kernel: the few-tiles one on these 1024 tiles, bit for bit; the chunked one on maps whose
  // few-tiles buffers would exceed 48 MiB.
  EXPECT_TRUE(with.equal(tide::kernels::winograd_conv3x3_few_tiles(x, conv->weight, conv->bias)));
  const at::Tensor large = at::randn({1, 64, 200, 200}).contiguous(at::MemoryFormat::ChannelsLast);
  ASSERT_FALSE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 64, 64, 200, 200));
  EXPECT_TRUE(conv->forward(large).equal(
      tide::kernels::winograd_conv3x3(large, tide::kernels::winograd_weight_transform(weight), conv->bias)));
  {
    // Without the direct kernel the weight stays channels last, which the few-tiles kernel reads as well
    // (training's layout); the large map still goes to the chunked kernel.
    tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("direct_conv,winograd_f4"));
    tide::nn::Conv2d nhwc_conv(64, 64, 3, 1, 1);
    tide::nn::store_conv_weights_for_current_layout(*nhwc_conv);
    ASSERT_TRUE(nhwc_conv->weight.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(nhwc_conv->forward(x).equal(tide::kernels::winograd_conv3x3_few_tiles(x, nhwc_conv->weight, nhwc_conv->bias)));
    EXPECT_TRUE(nhwc_conv->forward(large).equal(tide::kernels::winograd_conv3x3(
        large, tide::kernels::winograd_weight_transform(nhwc_conv->weight), nhwc_conv->bias)));
  }
  // Strided convolutions, which it does not cover, go to the direct kernel, or oneDNN without it.
  tide::nn::Conv2d strided(64, 64, 3, 2, 1);
  tide::nn::store_conv_weights_for_current_layout(*strided);
  const at::Tensor strided_onednn =
      at::conv2d(x, strided->weight.contiguous(at::MemoryFormat::ChannelsLast), strided->bias, 2, 1);
  EXPECT_TENSOR_NEAR(strided->forward(x), strided_onednn, 1e-5);
  tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("direct_conv,winograd_f4"));
  EXPECT_TRUE(strided->forward(x).equal(strided_onednn));
}

// A VAE decoder whose last level is large enough for the Winograd path decodes like the one without it,
// to float32 rounding (the tiny fixtures' decoders are too small to take it).
TEST(WinogradConv, VaeDecodeMatchesTheDecodeWithoutIt) {
  if (!tide::kernels::winograd_conv3x3_pays_off(1, 64, 64, 64, 64)) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  c10::InferenceMode inference;
  at::manual_seed(6);
  tide::models::AutoencoderKL vae(tide::models::AutoencoderKLConfig::from_json(
      {{"block_out_channels", {64, 64}},
       {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D"}},
       {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D"}},
       {"latent_channels", 4},
       {"layers_per_block", 1},
       {"norm_num_groups", 32}}));
  tide::nn::store_conv_weights_for_current_layout(*vae);
  const at::Tensor latents = at::randn({1, 4, 32, 32});
  const at::Tensor with = vae->decode(latents);  // [1, 3, 64, 64]
  at::Tensor without;
  {
    tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("winograd"));
    without = vae->decode(latents);
  }
  EXPECT_FALSE(with.equal(without));  // the 64×64 level took the other path
  EXPECT_TENSOR_NEAR(with, without, 1e-5);
}

}  // namespace
