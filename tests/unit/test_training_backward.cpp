// The backward passes training uses against frozen weights: convolutions that compute only their input's
// gradient (kernels/conv_input_gradient.h), linear layers that keep narrow weights as stored
// (nn/linear_frozen_weights.h) and gradient checkpointing (nn/checkpoint.h), each checked against
// plain libtorch autograd on random inputs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <functional>
#include <set>

#include "test_support.h"
#include <torch/csrc/autograd/autograd.h>

#include "tide/kernels/conv_input_gradient.h"
#include "tide/kernels/direct_conv.h"
#include "tide/kernels/gemm_cpu.h"
#include "tide/kernels/winograd_conv.h"
#include "tide/models/unet2d_condition.h"
#include "tide/nn/checkpoint.h"
#include "tide/nn/layers.h"
#include "tide/nn/frozen_training.h"
#include "tide/nn/lean_backward.h"
#include "tide/nn/feed_forward.h"
#include "tide/nn/resnet.h"
#include "tide/nn/transformer_2d.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/optimizations.h"
#include "tide/runtime/span_arena.h"

namespace {
using tide::runtime::Optimizations;
using tide::runtime::OptimizationsGuard;

using tide::testing::relative_l2_error;

// Nodes of the autograd graph behind `out` whose name contains `name`.
int64_t count_graph_nodes(const at::Tensor& out, const std::string& name) {
  std::vector<torch::autograd::Node*> pending{out.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  int64_t count = 0;
  while (!pending.empty()) {
    torch::autograd::Node* node = pending.back();
    pending.pop_back();
    if (!node || !seen.insert(node).second) continue;
    if (node->name().find(name) != std::string::npos) ++count;
    for (const auto& edge : node->next_edges()) pending.push_back(edge.function.get());
  }
  return count;
}

// The input gradient autograd computes for conv2d(x, w), in float64.
at::Tensor reference_input_gradient(const at::Tensor& x, const at::Tensor& w, const at::Tensor& grad, int64_t stride,
                                    int64_t padding) {
  const at::Tensor xd = x.to(at::kDouble).set_requires_grad(true);
  at::conv2d(xd, w.to(at::kDouble), {}, {stride, stride}, {padding, padding}).backward(grad.to(at::kDouble));
  return xd.grad();
}

TEST(ConvInputGradient, MatchesAutogradOnRandomShapes) {
  at::manual_seed(11);
  struct Case {
    int64_t batch, in, out, height, width, kernel, stride, padding;
  };
  // The UNet's kinds (3x3 same, 1x1 shortcuts, 3x3 stride-2 downsamplers on even and odd maps) and others.
  for (const Case c : {Case{1, 8, 16, 9, 7, 3, 1, 1}, Case{2, 16, 8, 6, 6, 1, 1, 0}, Case{1, 8, 8, 10, 10, 3, 2, 1},
                       Case{1, 8, 12, 9, 11, 3, 2, 1}, Case{2, 4, 6, 8, 5, 5, 1, 2}, Case{1, 6, 4, 7, 9, 2, 2, 0}}) {
    const at::Tensor x = at::randn({c.batch, c.in, c.height, c.width});
    const at::Tensor w = at::randn({c.out, c.in, c.kernel, c.kernel}) * 0.2;
    const at::Tensor grad = at::randn_like(at::conv2d(x, w, {}, {c.stride, c.stride}, {c.padding, c.padding}));
    const at::Tensor expected = reference_input_gradient(x, w, grad, c.stride, c.padding);
    for (const auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      const at::Tensor dx = tide::kernels::conv2d_input_gradient(grad.contiguous(format), w.contiguous(format),
                                                                 c.stride, c.padding, x.sizes());
      ASSERT_EQ(dx.sizes(), x.sizes()) << "kernel " << c.kernel << " stride " << c.stride;
      EXPECT_LT(relative_l2_error(dx, expected), 1e-5) << "kernel " << c.kernel << " stride " << c.stride;
    }
  }
}

// The few-tiles Winograd kernel's input gradient against float64 autograd, on channels-last (training's),
// HWIO and NCHW weights: odd maps, more than 256 output channels (row blocks), input channels not a multiple of 32 or 8
// (the scalar transform), one tile; 1 and 3 threads (different work splits).
TEST(ConvInputGradient, FewTilesWinogradMatchesAutogradOnRandomShapes) {
  at::manual_seed(17);
  struct Case {
    int64_t batch, in, out, height, width;
  };
  const int threads_before = at::get_num_threads();
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    for (const Case c : {Case{1, 8, 16, 9, 7}, Case{2, 36, 20, 6, 5}, Case{1, 44, 300, 5, 6}, Case{1, 3, 5, 2, 2},
                         Case{2, 136, 24, 10, 11}, Case{1, 16, 16, 1, 1}}) {
      const at::Tensor x = at::randn({c.batch, c.in, c.height, c.width});
      const at::Tensor w = at::randn({c.out, c.in, 3, 3}) / std::sqrt(9.0 * c.in);
      const at::Tensor grad = at::randn({c.batch, c.out, c.height, c.width});
      const at::Tensor expected = reference_input_gradient(x, w, grad, 1, 1);
      // Channels last (training), HWIO (inference) and NCHW weights, each read in place.
      for (const at::Tensor& layout : {w.contiguous(at::MemoryFormat::ChannelsLast), tide::kernels::to_hwio(w), w}) {
        const at::Tensor dx = tide::kernels::winograd_conv3x3_input_gradient(grad, layout);
        ASSERT_EQ(dx.sizes(), x.sizes());
        EXPECT_TRUE(dx.is_contiguous(at::MemoryFormat::ChannelsLast));
        EXPECT_LT(relative_l2_error(dx, expected), 1e-5) << "in " << c.in << " out " << c.out << " threads " << threads
                                                       << " strides " << layout.strides();
      }
    }
  }
  at::set_num_threads(threads_before);
  // A weight not float32, or not for this gradient's channels: an error, not a wrong answer.
  const at::Tensor grad = at::randn({1, 16, 6, 6});
  EXPECT_THROW(tide::kernels::winograd_conv3x3_input_gradient(grad, at::randn({12, 8, 3, 3})), c10::Error);
  EXPECT_THROW(tide::kernels::winograd_conv3x3_input_gradient(
                   grad, at::randn({16, 8, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast).to(at::kHalf)),
               c10::Error);
}

// With `winograd`, a 3×3 stride-1 input gradient goes through the few-tiles Winograd kernel where that pays
// and the weight is stored channels last (training's layout), through the chunked one on 512 tiles or more
// otherwise (the same values as winograd_conv3x3 on the flipped, transposed weight), and matches float64
// autograd either way; fewer than 32 tiles stay with oneDNN, and so do strided layers.
TEST(ConvInputGradient, WinogradWhereItPays) {
  at::manual_seed(13);
  const at::Tensor x = at::randn({1, 64, 64, 62}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor w = (at::randn({64, 64, 3, 3}) * 0.1).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor grad = at::randn({1, 64, 64, 62}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor dx = tide::kernels::conv2d_input_gradient(grad, w, 1, 1, x.sizes(), true);
  const at::Tensor w_nchw = w.contiguous();
  const at::Tensor dx_nchw_weight = tide::kernels::conv2d_input_gradient(grad, w_nchw, 1, 1, x.sizes(), true);
  if (tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 64, 64, 64, 62)) {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(dx.equal(tide::kernels::winograd_conv3x3_input_gradient(grad, w)));
    ASSERT_TRUE(tide::kernels::winograd_conv3x3_pays_off(1, 64, 64, 64, 62));
    EXPECT_TRUE(dx_nchw_weight.equal(tide::kernels::winograd_conv3x3(
        grad, tide::kernels::winograd_weight_transform(w.flip({2, 3}).transpose(0, 1)), at::Tensor())));
  } else {  // no AVX2/FMA: oneDNN's kernel
    EXPECT_TRUE(dx.equal(tide::kernels::conv2d_input_gradient(grad, w, 1, 1, x.sizes())));
  }
  const at::Tensor expected = reference_input_gradient(x, w, grad, 1, 1);
  EXPECT_LT(relative_l2_error(dx, expected), 1e-5);
  EXPECT_LT(relative_l2_error(dx_nchw_weight, expected), 1e-5);
  EXPECT_LT(relative_l2_error(dx, tide::kernels::conv2d_input_gradient(grad, w, 1, 1, x.sizes())), 1e-5);

  // 256 channels on 32×32 at batch 1 (256 tiles): the few-tiles kernel; on 8×8 (16 tiles): oneDNN.
  const at::Tensor small_w = (at::randn({256, 256, 3, 3}) * 0.05).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor small_grad = at::randn({1, 256, 32, 32}).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> small{1, 256, 32, 32};
  if (tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 256, 256, 32, 32)) {
    EXPECT_TRUE(tide::kernels::conv2d_input_gradient(small_grad, small_w, 1, 1, small, true)
                    .equal(tide::kernels::winograd_conv3x3_input_gradient(small_grad, small_w)));
  }
  const at::Tensor tiny_grad = small_grad.narrow(2, 0, 8).narrow(3, 0, 8).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> tiny{1, 256, 8, 8};
  EXPECT_TRUE(tide::kernels::conv2d_input_gradient(tiny_grad, small_w, 1, 1, tiny, true)
                  .equal(tide::kernels::conv2d_input_gradient(tiny_grad, small_w, 1, 1, tiny)));
  const at::Tensor strided_grad = grad.narrow(2, 0, 32).narrow(3, 0, 31).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(tide::kernels::conv2d_input_gradient(strided_grad, w, 2, 1, x.sizes(), true)
                  .equal(tide::kernels::conv2d_input_gradient(strided_grad, w, 2, 1, x.sizes())));
}

// With `direct`, a same-size input gradient on a map of at most 256 pixels that Winograd does not take goes
// through the direct kernel (bit for bit its answer), within float32 rounding of float64 autograd; larger
// maps, strided layers and `direct` off stay where they were. input_gradient_kernel() names each choice.
TEST(ConvInputGradient, DirectKernelOnSmallMaps) {
  at::manual_seed(31);
  using tide::kernels::ConvKernel;
  const at::Tensor w = (at::randn({256, 128, 3, 3}) * 0.03).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor x = at::randn({1, 128, 8, 8});
  const at::Tensor grad = at::randn({1, 256, 8, 8}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor dx = tide::kernels::conv2d_input_gradient(grad, w, 1, 1, x.sizes(), true, true);
  const auto kernel = tide::kernels::input_gradient_kernel(grad, w, 1, 1, x.sizes(), true, true, true);
  if (tide::kernels::gemm_f32_available()) {
    ASSERT_EQ(kernel, ConvKernel::direct);
    EXPECT_STREQ(tide::kernels::conv_kernel_name(kernel), "direct");
    EXPECT_TRUE(dx.equal(tide::kernels::direct_conv2d_input_gradient(grad, w, 1)));
  } else {
    EXPECT_EQ(kernel, ConvKernel::onednn);
  }
  EXPECT_LT(relative_l2_error(dx, reference_input_gradient(x, w, grad, 1, 1)), 1e-5);
  EXPECT_EQ(tide::kernels::input_gradient_kernel(grad, w, 1, 1, x.sizes(), true, false, true), ConvKernel::onednn);
  EXPECT_STREQ(tide::kernels::conv_kernel_name(ConvKernel::onednn), "oneDNN");
  // 1024 pixels (256 Winograd tiles): the few-tiles kernel where it pays, never the direct one.
  const at::Tensor big_grad = at::randn({1, 256, 32, 32}).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> big{1, 128, 32, 32};
  EXPECT_NE(tide::kernels::input_gradient_kernel(big_grad, w, 1, 1, big, true, true, true), ConvKernel::direct);
  // 256 pixels with a weight over 16 MiB: F(4×4) tiles (16 of them); without them the direct kernel although the
  // few-tiles Winograd kernel with F(2×2) tiles would pay.
  const at::Tensor large_w = (at::randn({768, 768, 3, 3}) * 0.01).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor mid_grad = at::randn({1, 768, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<int64_t> mid{1, 768, 16, 16};
  if (tide::kernels::gemm_f32_available()) {
    ASSERT_TRUE(tide::kernels::winograd_conv3x3_few_tiles_pays_off(1, 768, 768, 16, 16));
    EXPECT_EQ(tide::kernels::input_gradient_kernel(mid_grad, large_w, 1, 1, mid, true, true, true),
              ConvKernel::winograd_f4);
    EXPECT_EQ(tide::kernels::input_gradient_kernel(mid_grad, large_w, 1, 1, mid, true, true, false), ConvKernel::direct);
    EXPECT_EQ(tide::kernels::input_gradient_kernel(mid_grad, large_w, 1, 1, mid, true, false, false),
              ConvKernel::winograd_few_tiles);
  }
  // Strided: oneDNN's.
  const at::Tensor strided_grad = at::randn({1, 256, 4, 4}).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_EQ(tide::kernels::input_gradient_kernel(strided_grad, w, 2, 1, x.sizes(), true, true, true), ConvKernel::onednn);
}

// A Conv2d layer whose weights need no gradient takes the frozen path with gradients on: the same output and
// input gradient as plain autograd (whose backward node is ConvolutionBackward0), for float32, float16 and
// int8 storage (the backward widens or dequantizes the stored weight).
TEST(ConvInputGradient, FrozenLayerMatchesPlainAutograd) {
  at::manual_seed(12);
  for (const auto storage : {tide::nn::WeightFormat::kFloat32, tide::nn::WeightFormat::kFloat16,
                             tide::nn::WeightFormat::kInt8}) {
    for (const int64_t stride : {1, 2}) {
      tide::nn::Conv2d conv(16, 24, 3, stride, 1);
      tide::nn::convert_weight_storage(*conv, [&](const std::string&) { return storage; });
      for (auto& p : conv->parameters()) p.set_requires_grad(false);
      const at::Tensor x = at::randn({2, 16, 12, 10});
      auto run = [&](const Optimizations& optimizations, std::string& node) {
        OptimizationsGuard guard(optimizations);
        const at::Tensor input = x.clone().set_requires_grad(true);
        const at::Tensor y = conv->forward(input);
        node = y.grad_fn() ? y.grad_fn()->name() : "none";
        (y * at::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
        return std::make_pair(y.detach().contiguous(), input.grad());
      };
      std::string frozen_node, plain_node;
      const auto [y_frozen, dx_frozen] = run(Optimizations(), frozen_node);
      const auto [y_plain, dx_plain] = run(Optimizations().without("frozen_backward"), plain_node);
      const std::string what = tide::nn::weight_format_name(storage) + " stride " + std::to_string(stride);
      EXPECT_NE(frozen_node.find("FrozenConv2dFunction"), std::string::npos) << what << ": " << frozen_node;
      EXPECT_NE(plain_node.find("ConvolutionBackward"), std::string::npos) << what << ": " << plain_node;
      // int8 forwards through the W8A8 kernel on the frozen path (inference's), dequantized on the plain one.
      const double forward_tolerance = storage == tide::nn::WeightFormat::kInt8 ? 0.05 : 1e-5;
      EXPECT_LT(relative_l2_error(y_frozen, y_plain), forward_tolerance) << what;
      EXPECT_LT(relative_l2_error(dx_frozen, dx_plain), 1e-5) << what;
    }
  }
}

TEST(ConvInputGradient, SecondOrderGradientsAreRefused) {
  tide::nn::Conv2d conv(4, 4, 3, 1, 1);
  for (auto& p : conv->parameters()) p.set_requires_grad(false);
  const at::Tensor x = at::randn({1, 4, 6, 6}).set_requires_grad(true);
  const at::Tensor y = conv->forward(x).square().sum();
  EXPECT_THROW(torch::autograd::grad({y}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true), c10::Error);
}

// A Linear layer whose weights are stored narrower than they compute (--weights f16|bf16 in training) and need
// no gradient keeps them as stored in the graph (nn/linear_frozen_weights.h): the same output and input
// gradient as plain autograd on the widened weight. Float32 weights take that function too where its products
// go through oneDNN's matmul (onednn_matmul), and autograd's own path without it.
TEST(LinearFrozenWeights, NarrowLayerMatchesPlainAutograd) {
  at::manual_seed(14);
  for (const auto storage : {tide::nn::WeightFormat::kFloat32, tide::nn::WeightFormat::kFloat16,
                             tide::nn::WeightFormat::kBFloat16, tide::nn::WeightFormat::kInt8}) {
    for (const bool bias : {true, false}) {
      for (const bool onednn : {true, false}) {
        const Optimizations base = onednn ? Optimizations() : Optimizations().without("onednn_matmul");
        tide::nn::Linear linear(24, 40, bias);
        tide::nn::convert_weight_storage(*linear, [&](const std::string&) { return storage; });
        for (auto& p : linear->parameters()) p.set_requires_grad(false);
        const at::Tensor x = at::randn({2, 7, 24});
        auto run = [&](const Optimizations& optimizations, std::string& node) {
          OptimizationsGuard guard(optimizations);
          const at::Tensor input = x.clone().set_requires_grad(true);
          const at::Tensor y = linear->forward(input);
          node = y.grad_fn() ? y.grad_fn()->name() : "none";
          (y * at::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
          return std::make_pair(y.detach(), input.grad());
        };
        std::string frozen_node, plain_node;
        const auto [y_frozen, dx_frozen] = run(base, frozen_node);
        const auto [y_plain, dx_plain] = run(base.without("frozen_backward"), plain_node);
        const std::string what = tide::nn::weight_format_name(storage) + (bias ? " with bias" : " without bias") +
                                 (onednn ? ", oneDNN matmul" : ", BLAS");
        const bool narrow = storage != tide::nn::WeightFormat::kFloat32;
        EXPECT_EQ(frozen_node.find("FrozenLinearFunction") != std::string::npos, narrow || onednn)
            << what << ": " << frozen_node;
        EXPECT_EQ(plain_node.find("FrozenLinearFunction"), std::string::npos) << what << ": " << plain_node;
        EXPECT_LT(relative_l2_error(y_frozen, y_plain), 1e-6) << what;
        EXPECT_LT(relative_l2_error(dx_frozen, dx_plain), 1e-6) << what;
        // And against float64 autograd on the values the layer computes with.
        const at::Tensor w = tide::nn::weight_for_compute(linear->weight, linear->weight_scale, at::kDouble);
        const at::Tensor xd = x.to(at::kDouble).set_requires_grad(true);
        const at::Tensor yd = at::linear(xd, w, bias ? linear->bias.to(at::kDouble) : at::Tensor());
        (yd * at::linspace(-1, 1, yd.numel(), at::kDouble).view(yd.sizes())).sum().backward();
        EXPECT_LT(relative_l2_error(y_frozen, yd), 1e-6) << what;
        EXPECT_LT(relative_l2_error(dx_frozen, xd.grad()), 1e-6) << what;
      }
    }
  }
  tide::nn::Linear linear(4, 4);
  tide::nn::convert_weight_storage(*linear, [](const std::string&) { return tide::nn::WeightFormat::kFloat16; });
  for (auto& p : linear->parameters()) p.set_requires_grad(false);
  const at::Tensor x = at::randn({3, 4}).set_requires_grad(true);
  const at::Tensor y = linear->forward(x).square().sum();
  EXPECT_THROW(torch::autograd::grad({y}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true), c10::Error);
}

// The lean functions promise autograd's own gradients bit for bit, keeping less: `forward` on a copy of x
// with frozen_backward on (lean) and off (autograd's ops), the result, x's gradient for `dy` and the node.
struct ForwardBackward {
  at::Tensor y, dx;
  std::string node;
};
ForwardBackward run_with_gradient(const std::function<at::Tensor(const at::Tensor&)>& forward, const at::Tensor& x,
                                  const at::Tensor& dy, bool lean) {
  // The linear layers' products through the same library on both sides (frozen_backward routes them); the
  // caller's other switches stand.
  const Optimizations current = tide::runtime::optimizations();
  OptimizationsGuard guard(lean ? current.without("onednn_matmul") : current.without("frozen_backward,onednn_matmul"));
  const at::Tensor input = x.clone().set_requires_grad(true);
  const at::Tensor y = forward(input);
  const std::string node = y.grad_fn()->name();
  y.backward(dy);
  return {y.detach(), input.grad(), node};
}

void expect_lean_equals_autograd(const std::function<at::Tensor(const at::Tensor&)>& forward, const at::Tensor& x,
                                 const at::Tensor& dy, const std::string& function, const std::string& what) {
  const ForwardBackward lean = run_with_gradient(forward, x, dy, true);
  const ForwardBackward plain = run_with_gradient(forward, x, dy, false);
  EXPECT_NE(lean.node.find(function), std::string::npos) << what << ": " << lean.node;
  EXPECT_EQ(plain.node.find(function), std::string::npos) << what << ": " << plain.node;
  EXPECT_TRUE(at::equal(lean.y, plain.y)) << what;
  EXPECT_TRUE(at::equal(lean.dx, plain.dx)) << what;
  EXPECT_EQ(lean.dx.strides(), plain.dx.strides()) << what;
}

TEST(LeanBackward, GroupNormSiluGivesAutogradsGradientsBitForBit) {
  at::manual_seed(15);
  struct Case {
    std::vector<int64_t> shape;
    int64_t groups;
    bool channels_last;
    at::ScalarType dtype;
  };
  for (const Case& c : {Case{{2, 12, 5, 7}, 4, false, at::kFloat}, Case{{1, 16, 6, 3}, 8, true, at::kFloat},
                        Case{{3, 6, 11}, 3, false, at::kFloat}, Case{{1, 8, 4, 4}, 2, true, at::kBFloat16},
                        Case{{2, 4, 3, 5}, 1, false, at::kDouble}}) {
    tide::nn::GroupNorm norm(c.groups, c.shape[1], 1e-5);
    for (auto& p : norm->parameters()) {
      at::NoGradGuard no_grad;
      p.copy_(at::randn(p.sizes()));
      p.set_requires_grad(false);
    }
    norm->to(c.dtype);  // libtorch's kernels take the norm's weights in the input's dtype
    at::Tensor x = at::randn(c.shape).to(c.dtype) * 3 + 1;
    if (c.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const at::Tensor dy = at::randn(c.shape).to(c.dtype);
    const std::string what = at::toString(c.dtype) + std::string(" ") + c10::str(c.shape) + (c.channels_last ? " NHWC" : "");
    expect_lean_equals_autograd([&](const at::Tensor& t) { return norm->forward_silu(t); }, x, dy,
                                "GroupNormSiluFunction", what);
  }
  // Norm weights that train take autograd's own path (their gradients are wanted).
  tide::nn::GroupNorm trained(2, 4, 1e-5);
  const at::Tensor x = at::randn({1, 4, 3, 3}).set_requires_grad(true);
  EXPECT_FALSE(tide::nn::trains_against_frozen(x, trained->weight, trained->bias));
  EXPECT_EQ(trained->forward_silu(x).grad_fn()->name().find("GroupNormSiluFunction"), std::string::npos);
  EXPECT_THROW(tide::nn::group_norm_silu_lean(x, 3, {}, {}, 1e-5), c10::Error);  // 4 channels, 3 groups
}

// Without the GEGLU kernel (kernels/geglu_cpu.h, tested on its own), whose erf is an approximation.
TEST(LeanBackward, GegluGivesAutogradsGradientsBitForBit) {
  tide::runtime::OptimizationsGuard guard(tide::runtime::Optimizations().without("geglu_kernel"));
  at::manual_seed(16);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    tide::nn::Geglu geglu(10, 6);
    for (auto& p : geglu->parameters()) p.set_requires_grad(false);
    const at::Tensor x = at::randn({2, 5, 10}).to(dtype);
    const at::Tensor dy = at::randn({2, 5, 6}).to(dtype);
    if (dtype != at::kFloat) geglu->to(dtype);
    expect_lean_equals_autograd([&](const at::Tensor& t) { return geglu->forward(t); }, x, dy, "GegluFunction",
                                at::toString(dtype));
  }
  // The projection's own gradient, both halves written into one tensor.
  const at::Tensor projected = at::randn({3, 7, 10}), dy = at::randn({3, 7, 5});
  const at::Tensor lean = projected.clone().set_requires_grad(true), plain = projected.clone().set_requires_grad(true);
  tide::nn::geglu_lean(lean).backward(dy);
  const auto halves = plain.chunk(2, -1);
  (halves[0] * at::gelu(halves[1])).backward(dy);
  EXPECT_TRUE(at::equal(lean.grad(), plain.grad()));
}

// A transformer block on many tokens recomputes its GEGLU projection and its self-attention's q, k and v in the
// backward instead of keeping them: the gradients stay autograd's, and what the forward keeps per token
// shrinks by those tensors.
TEST(LeanBackward, LargeTransformerBlockRecomputesProjectionsInTheBackward) {
  at::manual_seed(17);
  const int64_t dim = 128;
  tide::nn::BasicTransformerBlock block(dim, 4, 32, 24, false);
  for (auto& p : block->parameters()) p.set_requires_grad(false);
  const at::Tensor context = at::randn({1, 7, 24});
  // 4096 tokens: a 16 MiB projection, recomputed; 2048: 8 MiB, kept.
  const int64_t many = tide::nn::kRecomputedProjectionMinBytes / (8 * dim * 4), few = many / 2;
  ASSERT_EQ(many, 4096);
  struct Run {
    at::Tensor x_grad, context_grad;
    int64_t checkpoints = 0, recomputed_attentions = 0;
    double kept_bytes_per_token = 0;
  };
  auto run = [&](int64_t tokens, const Optimizations& optimizations) {
    OptimizationsGuard guard(optimizations);
    at::manual_seed(18);
    const at::Tensor x = (at::randn({1, tokens, dim})).set_requires_grad(true);
    const at::Tensor c = context.clone().set_requires_grad(true);
    Run r;
    at::Tensor out;
    {
      tide::runtime::SpanArenaRouting routing;  // its statistics count the blocks the graph keeps
      const int64_t before = tide::runtime::span_arena().stats().in_use_bytes;
      out = block->forward(x, c);  // [1, tokens, dim]
      r.kept_bytes_per_token =
          double(tide::runtime::span_arena().stats().in_use_bytes - before) / static_cast<double>(tokens);
    }
    r.checkpoints = count_graph_nodes(out, "CheckpointFunction");
    r.recomputed_attentions = count_graph_nodes(out, "RecomputingAttentionFunction");
    const at::Tensor dy = at::randn(out.sizes());
    out.backward(dy);
    r.x_grad = x.grad();
    r.context_grad = c.grad();
    return r;
  };
  const Run recomputed = run(many, Optimizations());
  const Run plain = run(many, Optimizations().without("frozen_backward"));
  const Run kept = run(few, Optimizations());
  EXPECT_EQ(recomputed.checkpoints, 1);
  EXPECT_EQ(recomputed.recomputed_attentions, 1);
  EXPECT_EQ(plain.checkpoints + plain.recomputed_attentions, 0);
  EXPECT_EQ(kept.checkpoints + kept.recomputed_attentions, 0);
  EXPECT_LT(relative_l2_error(recomputed.x_grad, plain.x_grad), 1e-5);
  EXPECT_LT(relative_l2_error(recomputed.context_grad, plain.context_grad), 1e-5);
  // Per token the projection is 8·dim floats (4 KiB here), q, k and v 3·dim (1.5 KiB): 5 KiB of it no longer kept.
  EXPECT_LT(recomputed.kept_bytes_per_token + 5120, kept.kept_bytes_per_token)
      << recomputed.kept_bytes_per_token << " vs " << kept.kept_bytes_per_token;

  // A block whose weights train keeps everything: recomputing would give the input's gradient alone.
  block->attn1->to_q->weight.set_requires_grad(true);
  block->ff->net[0]->as<tide::nn::Geglu>()->proj->weight.set_requires_grad(true);
  const Run trainable = run(many, Optimizations().without("frozen_backward"));
  const Run trainable_frozen_path = run(many, Optimizations());
  EXPECT_EQ(trainable_frozen_path.checkpoints + trainable_frozen_path.recomputed_attentions, 0);
  ASSERT_TRUE(block->attn1->to_q->weight.grad().defined());
  ASSERT_TRUE(block->ff->net[0]->as<tide::nn::Geglu>()->proj->weight.grad().defined());
  EXPECT_LT(relative_l2_error(trainable_frozen_path.x_grad, trainable.x_grad), 1e-5);
}

TEST(Checkpoint, GradientsEqualUncheckpointedAndTheSegmentRunsAgain) {
  at::manual_seed(13);
  const at::Tensor w = at::randn({6, 6});
  int runs = 0;
  // Two outputs from three inputs, one of which needs no gradient.
  const tide::nn::Segment segment = [&](const std::vector<at::Tensor>& in) {
    ++runs;
    const at::Tensor h = at::tanh(at::mm(in[0], w) + in[1]) * in[2];
    return std::vector<at::Tensor>{h.sum(1), at::sigmoid(h)};
  };
  auto gradients = [&](bool checkpointed) {
    const at::Tensor a = at::full({4, 6}, 0.3).set_requires_grad(true);
    const at::Tensor b = at::linspace(-1, 1, 6).set_requires_grad(true);
    const at::Tensor c = at::full({4, 1}, 2.0);
    const std::vector<at::Tensor> in{a + at::arange(24).view({4, 6}) * 0.01, b, c};
    const auto out = checkpointed ? tide::nn::checkpoint(segment, in) : segment(in);
    (out[0].square().sum() + (out[1] * 3).sum()).backward();
    return std::make_pair(a.grad(), b.grad());
  };
  runs = 0;
  const auto [a_plain, b_plain] = gradients(false);
  EXPECT_EQ(runs, 1);
  runs = 0;
  const auto [a_checkpointed, b_checkpointed] = gradients(true);
  EXPECT_EQ(runs, 2);  // once forward without a graph, once in the backward pass
  EXPECT_TENSOR_NEAR(a_checkpointed, a_plain, 1e-6);
  EXPECT_TENSOR_NEAR(b_checkpointed, b_plain, 1e-6);
  {
    torch::NoGradGuard no_grad;
    runs = 0;
    tide::nn::checkpoint(segment, {at::ones({4, 6}), at::ones({6}), at::ones({4, 1})});
    EXPECT_EQ(runs, 1);
  }
}

// A small SD-like UNet with frozen weights: the gradients of the loss with respect to the latents and the
// text context are the same with its blocks checkpointed, with the frozen-weight backward and with plain
// autograd.
TEST(Checkpoint, UNetBlocksGiveTheSameGradients) {
  at::manual_seed(14);
  const nlohmann::json config = {{"block_out_channels", {32, 64}},
                                 {"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
                                 {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}},
                                 {"attention_head_dim", 8},
                                 {"cross_attention_dim", 32},
                                 {"layers_per_block", 2},
                                 {"sample_size", 16}};
  tide::models::UNet2DConditionModel unet(tide::models::UNet2DConditionConfig::from_json(config));
  for (auto& p : unet->parameters()) p.set_requires_grad(false);
  const at::Tensor sample = at::randn({1, 4, 14, 10}), context = at::randn({1, 77, 32});
  auto gradients = [&](bool checkpointed, const Optimizations& optimizations) {
    OptimizationsGuard guard(optimizations);
    unet->gradient_checkpointing = checkpointed;
    const at::Tensor s = sample.clone().set_requires_grad(true), c = context.clone().set_requires_grad(true);
    unet->forward(s, 300.0, c).square().mean().backward();
    return std::make_pair(s.grad(), c.grad());
  };
  {
    // One checkpointed segment per resnet and per transformer (as diffusers checkpoints them), not per block:
    // the backward then holds one layer's recomputed activations at a time.
    unet->gradient_checkpointing = true;
    const at::Tensor out = unet->forward(sample.clone().set_requires_grad(true), 300.0, context);
    int64_t layers = 0;
    for (const auto& m : unet->modules())
      if (dynamic_cast<tide::nn::ResnetBlock2DImpl*>(m.get()) || dynamic_cast<tide::nn::Transformer2DModelImpl*>(m.get()))
        ++layers;
    EXPECT_EQ(count_graph_nodes(out, "CheckpointFunction"), layers);
    EXPECT_EQ(layers, 18);  // down 2 + 2 + 2, mid 2 + 1, up 3 + 3 + 3
  }
  const auto [s_plain, c_plain] = gradients(false, Optimizations().without("frozen_backward"));
  ASSERT_GT(c_plain.abs().max().item<double>(), 0);
  const auto [s_frozen, c_frozen] = gradients(false, Optimizations());
  const auto [s_checkpointed, c_checkpointed] = gradients(true, Optimizations());
  EXPECT_LT(relative_l2_error(s_frozen, s_plain), 1e-5);
  EXPECT_LT(relative_l2_error(c_frozen, c_plain), 1e-5);
  EXPECT_LT(relative_l2_error(s_checkpointed, s_frozen), 1e-5);
  EXPECT_LT(relative_l2_error(c_checkpointed, c_frozen), 1e-5);
  unet->gradient_checkpointing = false;
}

}  // namespace
