// tide's direct convolution (HWIO or channels-last weights, indirect matrix products) and its input gradient
// against conv2d and float64 autograd on random inputs: 1×1, 3×3 and 5×5 kernels, strides 1 and 2, with and
// without padding, odd sizes, channel counts that leave partial column panels and channel blocks, maps of a
// few pixels (the workers split the weight's rows) and of many (its columns), one and several threads; its
// rounding error compared with libtorch's float32 convolution, both measured against float64. And the Conv2d module: which layers store their weight HWIO,
// that they compute what the channels-last layout computes, and what happens to the layout on the way.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "test_support.h"
#include "tide/kernels/direct_conv.h"
#include "tide/kernels/gemm_cpu.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/nn/layers.h"
#include "tide/runtime/optimizations.h"

namespace {

using tide::kernels::direct_conv2d;
using tide::kernels::direct_conv2d_input_gradient;
using tide::kernels::direct_conv2d_input_gradient_supported;
using tide::kernels::direct_conv2d_supported;
using tide::kernels::is_hwio;
using tide::kernels::to_hwio;

struct Shape {
  int64_t n, c, k, h, w, kernel, stride, padding;
};

TEST(DirectConv, HwioKeepsShapeAndValues) {
  const at::Tensor w = at::randn({24, 5, 3, 3});
  const at::Tensor hwio = to_hwio(w);
  EXPECT_TRUE(is_hwio(hwio));
  EXPECT_FALSE(is_hwio(w));
  EXPECT_FALSE(is_hwio(w.contiguous(at::MemoryFormat::ChannelsLast)));
  EXPECT_EQ(hwio.sizes(), w.sizes());
  EXPECT_TRUE(at::equal(hwio, w));
  EXPECT_TRUE(hwio.permute({2, 3, 1, 0}).is_contiguous());  // [kh, kw, C, K] in memory
  EXPECT_TRUE(is_hwio(to_hwio(at::randn({16, 8, 1, 1}))));
  EXPECT_TRUE(is_hwio(hwio.to(at::kHalf)));  // widening and narrowing keep the layout
}

TEST(DirectConv, MatchesConv2dOnRandomShapes) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the direct kernel is off";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const Shape shapes[] = {
      {1, 8, 8, 1, 1, 3, 1, 1},      {2, 16, 24, 7, 9, 3, 1, 1},    {1, 17, 40, 5, 6, 3, 1, 1},
      {2, 131, 56, 8, 8, 3, 1, 1},   {1, 301, 136, 4, 4, 3, 1, 1},  {2, 64, 32, 16, 15, 3, 2, 1},
      {1, 24, 16, 7, 7, 3, 2, 1},    {2, 40, 48, 9, 11, 1, 1, 0},   {1, 33, 8, 6, 5, 3, 1, 0},
      {3, 20, 272, 23, 19, 3, 1, 1}, {1, 8, 16, 2, 3, 3, 2, 1},     {1, 12, 8, 5, 5, 5, 1, 2},
      {1, 136, 24, 17, 16, 3, 1, 1},  // 272 output pixels: just above the few-rows split
  };
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto& s : shapes) {
      const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
      const at::Tensor weight = at::randn({s.k, s.c, s.kernel, s.kernel}, gen) / std::sqrt(double(s.c * s.kernel * s.kernel));
      const at::Tensor bias = at::randn({s.k}, gen);
      const at::Tensor hwio = to_hwio(weight);
      // 1×1 layers stay with oneDNN (direct_conv2d_wants_hwio), but the kernel computes them too.
      ASSERT_EQ(direct_conv2d_supported(x, hwio, s.stride, s.padding), s.kernel > 1);
      for (bool with_bias : {true, false}) {
        const at::Tensor b = with_bias ? bias : at::Tensor();
        const at::Tensor exact = at::conv2d(x.to(at::kDouble), weight.to(at::kDouble),
                                            with_bias ? bias.to(at::kDouble) : at::Tensor(), s.stride, s.padding);
        const double libtorch_error = tide::testing::max_abs_diff(at::conv2d(x, weight, b, s.stride, s.padding), exact);
        for (bool nhwc : {true, false}) {
          const at::Tensor input = nhwc ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
          const at::Tensor got = direct_conv2d(input, hwio, b, s.stride, s.padding);
          ASSERT_EQ(got.sizes(), exact.sizes());
          EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
          const double error = tide::testing::max_abs_diff(got, exact);
          // Within a few times libtorch's own error, or of what summing the fan-in's products one after
          // another in float32 typically costs (√n rounding errors of outputs of size ~1, 8σ).
          const double sequential_sum = 8 * std::sqrt(double(s.c * s.kernel * s.kernel)) * 6e-8;
          EXPECT_LT(error, 4 * libtorch_error + sequential_sum)
              << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h << " w=" << s.w << " kernel=" << s.kernel
              << " stride=" << s.stride << " padding=" << s.padding << " threads=" << threads;
        }
      }
    }
  }
  at::set_num_threads(1);
}

// On maps of few pixels each kernel tap multiplies only the pixels inside the map: the same sums, bit for bit
// on one thread, as the kernel gives for the input padded with zeros beforehand (where every tap multiplies
// every output pixel's row, the zeros included). 3×3 and 5×5 kernels, strides 1 and 2, HWIO and channels-last
// weights, maps where some taps reach no pixel at all.
TEST(DirectConv, PaddingLeftOutGivesTheSameSumsAsZeros) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the direct kernel is off";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(31);
  const Shape shapes[] = {
      {2, 40, 48, 4, 4, 3, 1, 1}, {2, 136, 32, 8, 8, 3, 1, 1}, {1, 24, 16, 5, 7, 5, 1, 2},
      {1, 16, 24, 1, 1, 3, 1, 1}, {2, 32, 16, 9, 8, 3, 2, 1}, {1, 8, 8, 2, 2, 5, 1, 2},
  };
  at::set_num_threads(1);
  for (const auto& s : shapes) {
    const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
    const at::Tensor weight = at::randn({s.k, s.c, s.kernel, s.kernel}, gen);
    const at::Tensor bias = at::randn({s.k}, gen);
    const at::Tensor padded = at::constant_pad_nd(x, {s.padding, s.padding, s.padding, s.padding}, 0.0);
    for (const at::Tensor& w : {to_hwio(weight), weight.contiguous(at::MemoryFormat::ChannelsLast)}) {
      const at::Tensor got = direct_conv2d(x, w, bias, s.stride, s.padding);
      const at::Tensor with_zeros = direct_conv2d(padded, w, bias, s.stride, 0);
      EXPECT_TRUE(at::equal(got, with_zeros)) << "n=" << s.n << " c=" << s.c << " h=" << s.h << " w=" << s.w
                                              << " kernel=" << s.kernel << " stride=" << s.stride
                                              << (is_hwio(w) ? " HWIO" : " channels last");
      EXPECT_LT(tide::testing::max_abs_diff(got, at::conv2d(x, weight, bias, s.stride, s.padding)), 1e-3);
    }
  }
}

// A channels-last weight (training keeps the UNet's so) read in place: its rows, the input channels, are
// consecutive, so the kernel transposes 8×8 pieces as it copies them; the same convolution as the HWIO weight
// within float32 rounding, on maps of few pixels and of many.
TEST(DirectConv, ChannelsLastWeightMatchesConv2dOnRandomShapes) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the direct kernel is off";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const Shape shapes[] = {
      {1, 8, 8, 1, 1, 3, 1, 1},    {2, 13, 20, 4, 4, 3, 1, 1},  {1, 136, 24, 8, 8, 3, 1, 1},  {1, 64, 40, 9, 8, 3, 2, 1},
      {2, 24, 16, 7, 6, 5, 1, 2},  {1, 40, 24, 20, 19, 3, 1, 1}, {1, 300, 16, 4, 4, 3, 1, 1}, {2, 16, 8, 6, 6, 1, 1, 0},
  };
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    for (const auto& s : shapes) {
      const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
      const at::Tensor weight = at::randn({s.k, s.c, s.kernel, s.kernel}, gen) / std::sqrt(double(s.c * s.kernel * s.kernel));
      const at::Tensor bias = at::randn({s.k}, gen);
      const at::Tensor exact = at::conv2d(x.to(at::kDouble), weight.to(at::kDouble), bias.to(at::kDouble), s.stride, s.padding);
      const double libtorch_error = tide::testing::max_abs_diff(at::conv2d(x, weight, bias, s.stride, s.padding), exact);
      const at::Tensor got = direct_conv2d(x, weight.contiguous(at::MemoryFormat::ChannelsLast), bias, s.stride, s.padding);
      ASSERT_EQ(got.sizes(), exact.sizes());
      const double sequential_sum = 8 * std::sqrt(double(s.c * s.kernel * s.kernel)) * 6e-8;
      EXPECT_LT(tide::testing::max_abs_diff(got, exact), 4 * libtorch_error + sequential_sum)
          << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h << " w=" << s.w << " kernel=" << s.kernel
          << " stride=" << s.stride << " threads=" << threads;
    }
  }
  at::set_num_threads(1);
  // Neither HWIO nor channels last (an NCHW weight): an error, not a slow or wrong answer.
  EXPECT_THROW(direct_conv2d(at::randn({1, 8, 4, 4}), at::randn({16, 8, 3, 3}), at::Tensor(), 1, 1), c10::Error);
}

// The input gradient of a stride-1, same-size convolution, for HWIO and channels-last weights, against float64
// autograd: 3×3, 5×5 and 1×1 kernels, odd maps, output channels (its rows) not a multiple of 8, one tile of
// pixels and up to 256; one and three threads.
TEST(DirectConv, InputGradientMatchesAutogradOnRandomShapes) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the direct kernel is off";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(29);
  const Shape shapes[] = {
      {1, 16, 20, 4, 4, 3, 1, 1},  {2, 24, 136, 3, 5, 3, 1, 1}, {1, 40, 13, 16, 16, 3, 1, 1}, {1, 8, 8, 1, 1, 3, 1, 1},
      {1, 16, 24, 7, 9, 5, 1, 2},  {2, 32, 48, 5, 5, 1, 1, 0},  {1, 264, 264, 4, 4, 3, 1, 1},
  };
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    for (const auto& s : shapes) {
      const at::Tensor x = at::randn({s.n, s.c, s.h, s.w}, gen);
      const at::Tensor weight = at::randn({s.k, s.c, s.kernel, s.kernel}, gen) / std::sqrt(double(s.k * s.kernel * s.kernel));
      const at::Tensor grad = at::randn({s.n, s.k, s.h, s.w}, gen).contiguous(at::MemoryFormat::ChannelsLast);
      const at::Tensor xd = x.to(at::kDouble).set_requires_grad(true);
      at::conv2d(xd, weight.to(at::kDouble), {}, 1, s.padding).backward(grad.to(at::kDouble));
      const at::Tensor exact = xd.grad();
      at::Tensor libtorch_x = x.clone().set_requires_grad(true);
      at::conv2d(libtorch_x, weight, {}, 1, s.padding).backward(grad);
      const double libtorch_error = tide::testing::max_abs_diff(libtorch_x.grad(), exact);
      for (const at::Tensor& w : {weight.contiguous(at::MemoryFormat::ChannelsLast), to_hwio(weight)}) {
        ASSERT_TRUE(direct_conv2d_input_gradient_supported(grad, w, 1, s.padding));
        const at::Tensor got = direct_conv2d_input_gradient(grad, w, s.padding);
        ASSERT_EQ(got.sizes(), x.sizes());
        EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast));
        const double sequential_sum = 8 * std::sqrt(double(s.k * s.kernel * s.kernel)) * 6e-8;
        EXPECT_LT(tide::testing::max_abs_diff(got, exact), 4 * libtorch_error + sequential_sum)
            << "n=" << s.n << " c=" << s.c << " k=" << s.k << " h=" << s.h << " w=" << s.w << " kernel=" << s.kernel
            << " threads=" << threads << " strides " << w.strides();
      }
    }
  }
  at::set_num_threads(1);
}

TEST(DirectConv, InputGradientSupportedOnlyForSmallSameSizeMaps) {
  const at::Tensor w = at::randn({16, 8, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor grad = at::randn({1, 16, 16, 16});  // 256 pixels: the most it takes
  if (!tide::kernels::gemm_f32_available()) {
    EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad, w, 1, 1));
    GTEST_SKIP() << "this CPU has no AVX2/FMA";
  }
  EXPECT_TRUE(direct_conv2d_input_gradient_supported(grad, w, 1, 1));
  EXPECT_TRUE(direct_conv2d_input_gradient_supported(grad, to_hwio(w), 1, 1));
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(at::randn({1, 16, 16, 17}), w, 1, 1));  // 272 pixels
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad, w, 2, 1));                        // strided
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad, w, 1, 0));                        // not the same size
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad, w.contiguous(), 1, 1));           // NCHW weight
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad, at::randn({16, 12, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast), 1, 1));
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(grad.to(at::kDouble), w, 1, 1));
  EXPECT_FALSE(direct_conv2d_input_gradient_supported(at::randn({1, 8, 16, 16}), w, 1, 1));  // channels differ
  EXPECT_THROW(direct_conv2d_input_gradient(at::randn({1, 16, 20, 20}), w, 1), c10::Error);
}

TEST(DirectConv, SupportedForFloatInputWithoutGradReadableWeightAndWideEnoughProducts) {
  const at::Tensor x = at::randn({1, 8, 6, 6});
  const at::Tensor w = to_hwio(at::randn({16, 8, 3, 3}));
  if (!tide::kernels::gemm_f32_available()) {
    EXPECT_FALSE(direct_conv2d_supported(x, w, 1, 1));
    GTEST_SKIP() << "this CPU has no AVX2/FMA";
  }
  EXPECT_TRUE(direct_conv2d_supported(x, w, 1, 1));
  EXPECT_TRUE(direct_conv2d_supported(x, w.to(at::kHalf), 2, 1));  // 16-bit weights: the caller widens them
  EXPECT_FALSE(direct_conv2d_supported(x, at::randn({16, 8, 3, 3}), 1, 1));            // NCHW
  // Channels last (training's layout): up to 256 output pixels, where the kernel reads the weight in place.
  const at::Tensor channels_last = at::randn({16, 8, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(direct_conv2d_supported(at::randn({1, 8, 16, 16}), channels_last, 1, 1));
  EXPECT_TRUE(direct_conv2d_supported(at::randn({1, 8, 32, 32}), channels_last, 2, 1));  // 16×16 out
  EXPECT_FALSE(direct_conv2d_supported(at::randn({1, 8, 16, 17}), channels_last, 1, 1));
  EXPECT_FALSE(direct_conv2d_supported(x, to_hwio(at::randn({12, 8, 3, 3})), 1, 1));   // 12 outputs: not 8·n
  EXPECT_FALSE(direct_conv2d_supported(at::randn({1, 4, 6, 6}), to_hwio(at::randn({16, 4, 3, 3})), 1, 1));
  EXPECT_FALSE(direct_conv2d_supported(x.to(at::kDouble), w, 1, 1));
  EXPECT_FALSE(direct_conv2d_supported(x.requires_grad_(), w, 1, 1));
  EXPECT_FALSE(direct_conv2d_supported(at::randn({1, 8, 1, 1}), w, 1, 0));  // kernel larger than the input
  EXPECT_FALSE(direct_conv2d_supported(x, to_hwio(at::randn({16, 8, 1, 1})), 1, 0));  // 1×1: oneDNN's
  EXPECT_THROW(direct_conv2d(at::randn({1, 8, 6, 6}), at::randn({16, 8, 3, 3}), at::Tensor(), 1, 1), c10::Error);
}

// The module: weights wide enough for the kernel are stored HWIO, the rest channels last; both layouts compute
// the same convolution, HWIO through the direct kernel (or Winograd on large maps) with no copy of the weight.
// 1×1 and thin layers stay channels last.
TEST(DirectConv, Conv2dModuleStoresHwioAndComputesTheSame) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::NoGradGuard no_grad;
  tide::nn::Conv2d wide(16, 32, 3, 1, 1), thin(16, 4, 3, 1, 1), down(16, 32, 3, 2, 1), pointwise(16, 32, 1);
  auto all = std::make_shared<torch::nn::Module>();
  all->register_module("wide", wide);
  all->register_module("thin", thin);
  all->register_module("down", down);
  all->register_module("pointwise", pointwise);
  tide::nn::store_conv_weights_for_current_layout(*all);
  EXPECT_TRUE(is_hwio(wide->weight));
  EXPECT_TRUE(is_hwio(down->weight));
  EXPECT_FALSE(is_hwio(pointwise->weight));  // 1×1: oneDNN's
  EXPECT_FALSE(is_hwio(thin->weight));  // 4 outputs: oneDNN's
  EXPECT_TRUE(thin->weight.is_contiguous(at::MemoryFormat::ChannelsLast));

  const at::Tensor x = at::randn({2, 16, 9, 10});
  std::vector<at::Tensor> hwio_out;
  for (auto* conv : {&wide, &down, &pointwise}) hwio_out.push_back((*conv)->forward(x));
  {
    tide::runtime::OptimizationsGuard off(tide::runtime::Optimizations().without("direct_conv"));
    tide::nn::store_conv_weights_for_current_layout(*all);
    EXPECT_FALSE(is_hwio(wide->weight));
    EXPECT_TRUE(wide->weight.is_contiguous(at::MemoryFormat::ChannelsLast));
    int i = 0;
    for (auto* conv : {&wide, &down, &pointwise}) EXPECT_TENSOR_NEAR((*conv)->forward(x), hwio_out[i++], 1e-5);
  }
  tide::nn::store_conv_weights_for_current_layout(*all);
  EXPECT_TRUE(is_hwio(wide->weight));
  // 16-bit storage keeps the layout; the forward widens the weight per call and still takes the direct kernel.
  const at::Tensor y32 = wide->forward(x);
  wide->weight.set_data(wide->weight.to(at::kHalf));
  ASSERT_TRUE(is_hwio(wide->weight));
  EXPECT_TENSOR_NEAR(wide->forward(x), y32, 2e-2);
}

// A frozen layer stored HWIO (training keeps the UNet's channels last, but any layer may be) forwards through
// the direct kernel and takes oneDNN's input gradient on the HWIO weight: plain autograd's output and gradient.
TEST(DirectConv, FrozenHwioLayerMatchesPlainAutograd) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::manual_seed(17);
  for (const int64_t stride : {1, 2}) {
    tide::nn::Conv2d conv(16, 24, 3, stride, 1);
    tide::nn::store_conv_weights_for_current_layout(*conv);
    ASSERT_TRUE(is_hwio(conv->weight));
    for (auto& p : conv->parameters()) p.set_requires_grad(false);
    const at::Tensor x = at::randn({2, 16, 12, 10});
    auto run = [&](const tide::runtime::Optimizations& optimizations) {
      tide::runtime::OptimizationsGuard guard(optimizations);
      const at::Tensor input = x.clone().set_requires_grad(true);
      const at::Tensor y = conv->forward(input);
      (y * at::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
      return std::make_pair(y.detach().contiguous(), input.grad());
    };
    const auto [y, dx] = run(tide::runtime::Optimizations());
    const auto [y_onednn, dx_onednn] = run(tide::runtime::Optimizations().without("direct_conv"));
    const auto [y_plain, dx_plain] = run(tide::runtime::Optimizations().without("frozen_backward"));
    EXPECT_TENSOR_NEAR(y, y_plain, 1e-5);
    EXPECT_TENSOR_NEAR(dx, dx_plain, 1e-5);
    EXPECT_TENSOR_NEAR(dx_onednn, dx_plain, 1e-5);
    if (stride == 1) {
      EXPECT_FALSE(y.equal(y_onednn));  // the direct kernel's forward, not oneDNN's
    }
    EXPECT_TRUE(is_hwio(conv->weight));
  }
}

// Training keeps the UNet's weights channels last: on a small map a frozen layer then forwards through the
// direct kernel and takes its input gradient from it too, both reading that weight in place (bit for bit the
// kernels' own answers), with plain autograd's output and gradient; without direct_conv, oneDNN's.
TEST(DirectConv, FrozenChannelsLastLayerOnASmallMapUsesTheDirectKernelBothWays) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::manual_seed(19);
  tide::nn::Conv2d conv(24, 32, 3, 1, 1);
  conv->store_weight_as(at::MemoryFormat::ChannelsLast);
  for (auto& p : conv->parameters()) p.set_requires_grad(false);
  const at::Tensor x = at::randn({1, 24, 6, 7});
  const at::Tensor weights = at::linspace(-1, 1, 32 * 6 * 7).view({1, 32, 6, 7});
  auto run = [&](const tide::runtime::Optimizations& optimizations) {
    tide::runtime::OptimizationsGuard guard(optimizations);
    const at::Tensor input = x.clone().set_requires_grad(true);
    const at::Tensor y = conv->forward(input);
    (y * weights).sum().backward();
    return std::make_pair(y.detach(), input.grad());
  };
  const auto [y, dx] = run(tide::runtime::Optimizations());
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(y.equal(direct_conv2d(x, conv->weight, conv->bias, 1, 1)));
    EXPECT_TRUE(dx.equal(direct_conv2d_input_gradient(weights.expand({1, 32, 6, 7}).contiguous(at::MemoryFormat::ChannelsLast),
                                                      conv->weight, 1)));
  }
  const auto [y_onednn, dx_onednn] = run(tide::runtime::Optimizations().without("direct_conv"));
  const auto [y_plain, dx_plain] = run(tide::runtime::Optimizations().without("frozen_backward"));
  EXPECT_FALSE(y.equal(y_onednn));
  EXPECT_TENSOR_NEAR(y, y_plain, 1e-5);
  EXPECT_TENSOR_NEAR(dx, dx_plain, 1e-5);
  EXPECT_TENSOR_NEAR(dx_onednn, dx_plain, 1e-5);
  EXPECT_TRUE(conv->weight.is_contiguous(at::MemoryFormat::ChannelsLast));
}

// Where the map is small and the weight large, the module takes the direct kernel even though the few-tiles
// Winograd kernel would pay off: at most 256 output pixels and over 16 MiB of weight (768 channels: 20.3 MiB),
// not with a smaller weight (384 channels) or a larger map.
TEST(DirectConv, PreferredOverWinogradForLargeWeightsOnSmallMaps) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::manual_seed(37);
  at::NoGradGuard no_grad;
  const at::Tensor large = to_hwio(at::randn({768, 768, 3, 3}) * 0.01), small = to_hwio(at::randn({384, 384, 3, 3}) * 0.02);
  EXPECT_TRUE(tide::kernels::direct_conv2d_preferred(at::empty({2, 768, 8, 8}), large, 1, 1));
  EXPECT_TRUE(tide::kernels::direct_conv2d_preferred(at::empty({1, 768, 16, 16}), large, 1, 1));
  EXPECT_FALSE(tide::kernels::direct_conv2d_preferred(at::empty({1, 768, 16, 17}), large, 1, 1));  // 272 pixels
  EXPECT_FALSE(tide::kernels::direct_conv2d_preferred(at::empty({2, 384, 8, 8}), small, 1, 1));
  ASSERT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 768, 768, 8, 8));  // 32 tiles

  tide::nn::Conv2d conv(768, 768, 3, 1, 1);
  conv->weight.set_data(large);
  const at::Tensor x = at::randn({2, 768, 8, 8});
  EXPECT_TRUE(conv->forward(x).equal(direct_conv2d(x, large, conv->bias, 1, 1)));
  tide::nn::Conv2d smaller(384, 384, 3, 1, 1);
  smaller->weight.set_data(small);
  const at::Tensor xs = at::randn({2, 384, 8, 8});
  ASSERT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(2, 384, 384, 8, 8));
  EXPECT_TRUE(smaller->forward(xs).equal(tide::kernels::winograd_conv3x3_few_tiles(xs, small, smaller->bias)));
}

}  // namespace
