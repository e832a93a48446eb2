// Linear layers' float32 products through oneDNN's matmul (kernels/matmul_f32.h) against float64 on random
// inputs: odd and empty shapes, batched and strided operands, weights read transposed in place, with and
// without bias; the Linear module's routing (inference and frozen-weight training) on and off. 1×1
// convolutions as the same product, and which of them the Conv2d module sends there.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <c10/core/InferenceMode.h>

#include "test_support.h"
#include "tide/kernels/conv_forward_kernel.h"
#include "tide/kernels/matmul_f32.h"
#include "tide/nn/layers.h"
#include "tide/runtime/optimizations.h"

namespace {

using tide::kernels::matmul_f32;
using tide::runtime::Optimizations;
using tide::runtime::OptimizationsGuard;

at::Tensor reference(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias) {
  at::Tensor y = at::matmul(a.to(at::kDouble), b.to(at::kDouble));
  return bias.defined() ? y + bias.to(at::kDouble) : y;
}

TEST(MatmulF32, MatchesFloat64OnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  struct Shape {
    std::vector<int64_t> a;  // [..., K]
    int64_t n;
  };
  const Shape shapes[] = {{{1, 1}, 1}, {{7, 13}, 5}, {{77, 768}, 33}, {{2, 7, 24}, 40}, {{3, 5, 2, 9}, 17},
                          {{154, 64}, 320}, {{1, 300}, 1}, {{0, 8}, 6}, {{4, 0}, 3}, {{5, 6}, 0}};
  for (const auto& s : shapes) {
    const int64_t k = s.a.back();
    const at::Tensor a = at::randn(s.a, gen);
    const at::Tensor weight = at::randn({s.n, k}, gen);  // [N, K] as a linear layer stores it
    const at::Tensor bias = at::randn({s.n}, gen);
    // b as a layer passes it (the weight read transposed), contiguous, and with strides that need a copy.
    const at::Tensor wide = at::randn({k, 2 * s.n}, gen);
    const at::Tensor operands[] = {weight.t(), weight.t().contiguous(), wide.slice(1, 0, 2 * s.n, 2)};
    for (const at::Tensor& b : operands)
      for (const bool with_bias : {true, false}) {
        const std::string what = "a " + std::to_string(a.dim()) + "-d with K " + std::to_string(k) + ", N " +
                                 std::to_string(s.n) + ", b strides " +
                                 std::to_string(b.stride(0)) + "x" + std::to_string(b.stride(1)) +
                                 (with_bias ? " with bias" : "");
        const at::Tensor y = matmul_f32(a, b, with_bias ? bias : at::Tensor());
        std::vector<int64_t> expected_sizes = s.a;
        expected_sizes.back() = s.n;
        ASSERT_EQ(y.sizes(), at::IntArrayRef(expected_sizes)) << what;
        ASSERT_EQ(y.scalar_type(), at::kFloat) << what;
        const at::Tensor expected = reference(a, b, with_bias ? bias : at::Tensor());
        if (y.numel() == 0) continue;
        if (k == 0 && !with_bias) {  // an empty sum: zeros, as at::linear gives
          EXPECT_TRUE(at::equal(y, at::zeros_like(y))) << what;
          continue;
        }
        EXPECT_LT(tide::testing::relative_l2_error(y, expected), 2e-6) << what;
      }
  }
}

TEST(MatmulF32, ReadsStridedRowsOfA) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const at::Tensor wide = at::randn({9, 40}, gen);
  const at::Tensor a = wide.narrow(1, 5, 24);  // rows 40 floats apart
  const at::Tensor transposed = at::randn({24, 9}, gen).t();  // [9, 24], no unit stride along rows
  const at::Tensor b = at::randn({24, 11}, gen);
  for (const at::Tensor& x : {a, transposed})
    EXPECT_LT(tide::testing::relative_l2_error(matmul_f32(x, b), reference(x, b, {})), 2e-6);
}

TEST(MatmulF32, RefusesWhatItDoesNotCompute) {
  const at::Tensor a = at::randn({3, 4}), b = at::randn({4, 5});
  EXPECT_TRUE(tide::kernels::matmul_f32_supported(a, b, at::randn({5})));
  const std::pair<std::string, std::array<at::Tensor, 3>> cases[] = {
      {"float64 a", {a.to(at::kDouble), b, {}}},
      {"16-bit b", {a, b.to(at::kHalf), {}}},
      {"mismatched K", {a, at::randn({3, 5}), {}}},
      {"3-d b", {a, at::randn({1, 4, 5}), {}}},
      {"bias of the wrong size", {a, b, at::randn({4})}},
      {"integer bias", {a, b, at::ones({5}, at::kInt)}},
      {"0-d a", {at::randn({}), b, {}}}};
  for (const auto& [what, t] : cases) {
    EXPECT_FALSE(tide::kernels::matmul_f32_supported(t[0], t[1], t[2])) << what;
    EXPECT_THROW(matmul_f32(t[0], t[1], t[2]), c10::Error) << what;
  }
}

// The Linear module computes with matmul_f32 when onednn_matmul is on and with at::linear when it is off: each
// result equal bit for bit to its kernel's (on a shape where the two libraries' roundings differ, so that the
// check can tell them apart).
TEST(MatmulF32, LinearLayerTakesItWhereSwitchedOn) {
  at::manual_seed(23);
  tide::nn::Linear linear(768, 320);
  const at::Tensor x = at::randn({2, 77, 768});
  const at::Tensor onednn = matmul_f32(x, linear->weight.detach().t(), linear->bias.detach());
  const at::Tensor blas = at::linear(x, linear->weight.detach(), linear->bias.detach());
  ASSERT_FALSE(at::equal(onednn, blas)) << "both libraries rounded alike here: the routing cannot be told apart";
  EXPECT_LT(tide::testing::relative_l2_error(onednn, blas), 1e-6);
  for (const bool on : {true, false}) {
    OptimizationsGuard guard(on ? Optimizations() : Optimizations().without("onednn_matmul"));
    {
      c10::InferenceMode inference;
      EXPECT_TRUE(at::equal(linear->forward(x), on ? onednn : blas)) << (on ? "on" : "off") << ", inference";
    }
    {
      c10::NoGradGuard no_grad;  // no inference tensors: what a pipeline without gradients computes
      EXPECT_TRUE(at::equal(linear->forward(x), on ? onednn : blas)) << (on ? "on" : "off") << ", no grad";
    }
  }
}

// matmul_f32 keeps no autograd graph: a layer whose weight or bias wants a gradient (gradients on, x without
// one) still gets it, as at::linear gives it.
TEST(MatmulF32, LinearLayerKeepsTheGradientsOfTrainableWeights) {
  at::manual_seed(24);
  tide::nn::Linear linear(12, 5);
  const at::Tensor x = at::randn({3, 12});
  const at::Tensor dy = at::randn({3, 5});
  const at::Tensor expected_dw = at::mm(dy.t(), x), expected_db = dy.sum(0);
  for (const bool on : {true, false}) {
    OptimizationsGuard guard(on ? Optimizations() : Optimizations().without("onednn_matmul"));
    linear->zero_grad();
    linear->forward(x).backward(dy);
    ASSERT_TRUE(linear->weight.grad().defined()) << (on ? "on" : "off");
    ASSERT_TRUE(linear->bias.grad().defined()) << (on ? "on" : "off");
    EXPECT_LT(tide::testing::relative_l2_error(linear->weight.grad(), expected_dw), 1e-6) << (on ? "on" : "off");
    EXPECT_LT(tide::testing::relative_l2_error(linear->bias.grad(), expected_db), 1e-6) << (on ? "on" : "off");
  }
}

TEST(MatmulF32, Conv1x1MatchesFloat64OnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(25);
  struct Shape {
    int64_t b, c, k, h, w;
  };
  const Shape shapes[] = {{1, 1, 1, 1, 1}, {2, 13, 7, 5, 3}, {2, 320, 40, 8, 8}, {1, 24, 640, 1, 9}, {3, 8, 16, 0, 4}};
  for (const auto& s : shapes) {
    const at::Tensor x = at::randn({s.b, s.c, s.h, s.w}, gen);
    const at::Tensor weight = at::randn({s.k, s.c, 1, 1}, gen), bias = at::randn({s.k}, gen);
    for (const bool nhwc : {true, false})
      for (const bool with_bias : {true, false}) {
        const std::string what = "b=" + std::to_string(s.b) + " c=" + std::to_string(s.c) + " k=" + std::to_string(s.k) +
                                 " " + std::to_string(s.h) + "x" + std::to_string(s.w) + (nhwc ? " NHWC" : " NCHW") +
                                 (with_bias ? " with bias" : "");
        const at::Tensor input = nhwc ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
        const at::Tensor b = with_bias ? bias : at::Tensor();
        ASSERT_TRUE(tide::kernels::conv1x1_f32_supported(input, weight, b)) << what;
        const at::Tensor y = tide::kernels::conv1x1_f32(input, weight, b);
        ASSERT_EQ(y.sizes(), at::IntArrayRef({s.b, s.k, s.h, s.w})) << what;
        EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast)) << what;
        if (y.numel() == 0) continue;
        const at::Tensor expected =
            at::conv2d(x.to(at::kDouble), weight.to(at::kDouble), with_bias ? bias.to(at::kDouble) : at::Tensor());
        EXPECT_LT(tide::testing::relative_l2_error(y, expected), 2e-6) << what;
      }
  }
  // What it does not compute: refused, and an error if called anyway.
  const at::Tensor x = at::randn({1, 8, 4, 4});
  const std::pair<std::string, std::array<at::Tensor, 3>> refused[] = {
      {"3x3 weight", {x, at::randn({4, 8, 3, 3}), {}}},
      {"channels differ", {x, at::randn({4, 6, 1, 1}), {}}},
      {"float64 input", {x.to(at::kDouble), at::randn({4, 8, 1, 1}), {}}},
      {"int8 weight", {x, at::ones({4, 8, 1, 1}, at::kChar), {}}},
      {"bias of the wrong size", {x, at::randn({4, 8, 1, 1}), at::randn({5})}},
      {"3-d input", {at::randn({8, 4, 4}), at::randn({4, 8, 1, 1}), {}}}};
  for (const auto& [what, t] : refused) {
    EXPECT_FALSE(tide::kernels::conv1x1_f32_supported(t[0], t[1], t[2])) << what;
    EXPECT_THROW(tide::kernels::conv1x1_f32(t[0], t[1], t[2]), c10::Error) << what;
  }
  // A 16-bit weight is supported (the layer widens it first) but not computed unwidened.
  const at::Tensor half_weight = at::randn({4, 8, 1, 1}).to(at::kHalf);
  EXPECT_TRUE(tide::kernels::conv1x1_f32_supported(x, half_weight));
  EXPECT_THROW(tide::kernels::conv1x1_f32(x, half_weight), c10::Error);
  // A 16-bit bias is widened, as the other kernels behind the same rule widen theirs: the float32 bias's result.
  const at::Tensor w = at::randn({4, 8, 1, 1}), half_bias = at::randn({4}).to(at::kHalf);
  ASSERT_TRUE(tide::kernels::conv1x1_f32_supported(x, w, half_bias));
  EXPECT_TRUE(at::equal(tide::kernels::conv1x1_f32(x, w, half_bias),
                        tide::kernels::conv1x1_f32(x, w, half_bias.to(at::kFloat))));
}

// The Conv2d module sends 1×1 convolutions on maps of at most 512 pixels to conv1x1_f32 (with channels_last and
// onednn_matmul on), larger maps and the switch off to oneDNN's convolution: each result equal bit for bit to
// its kernel's.
TEST(MatmulF32, Conv2dModuleTakesItOnSmallMaps) {
  at::manual_seed(26);
  tide::nn::Conv2d conv(640, 320, 1);
  c10::InferenceMode inference;
  const at::Tensor w = conv->weight.contiguous(at::MemoryFormat::ChannelsLast), b = conv->bias;
  for (const int64_t size : {16, 24}) {  // 2·16·16 = 512 pixels: a product; 2·24·24: the convolution
    const at::Tensor x = at::randn({2, 640, size, size}).contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor product = tide::kernels::conv1x1_f32(x, w, b), onednn = at::conv2d(x, w, b);
    ASSERT_FALSE(at::equal(product, onednn)) << "both kernels rounded alike here: the routing cannot be told apart";
    EXPECT_LT(tide::testing::relative_l2_error(product, onednn), 1e-6);
    EXPECT_EQ(tide::kernels::conv1x1_as_matmul_pays_off(x), size == 16);
    // The rule the module and `tide bench --conv` share names it.
    for (const bool allowed : {true, false})
      EXPECT_EQ(tide::kernels::conv2d_forward_kernel(x, w, 1, 0, true, true, true, /*matmul_1x1=*/allowed),
                allowed && size == 16 ? tide::kernels::ConvKernel::matmul_1x1 : tide::kernels::ConvKernel::onednn)
          << size;
    for (const bool on : {true, false}) {
      OptimizationsGuard guard(on ? Optimizations() : Optimizations().without("onednn_matmul"));
      EXPECT_TRUE(at::equal(conv->forward(x), on && size == 16 ? product : onednn)) << size << (on ? " on" : " off");
    }
  }
}

}  // namespace
