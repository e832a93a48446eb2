// GEGLU's kernel (kernels/geglu_cpu.h) against float64: value · gelu(gate) and both halves' gradients, on rows
// with and without a scalar tail, one and three threads; the Geglu module takes it for inference and training
// where the switch is on, and libtorch's ops where it is off.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "test_support.h"
#include "tide/kernels/geglu_cpu.h"
#include "tide/nn/feed_forward.h"
#include "tide/nn/lean_backward.h"
#include "tide/runtime/optimizations.h"

namespace {

using tide::testing::max_abs_diff;

// The exact GEGLU in float64: value · ½x(1 + erf(x/√2)), and its gradient with respect to the projection.
std::pair<at::Tensor, at::Tensor> reference(const at::Tensor& projected, const at::Tensor& grad) {
  const at::Tensor p = projected.to(at::kDouble).detach().requires_grad_(true);
  const auto halves = p.chunk(2, -1);
  const at::Tensor y = halves[0] * at::gelu(halves[1]);
  y.backward(grad.to(at::kDouble));
  return {y.detach(), p.grad()};
}

bool kernel_available() { return tide::kernels::geglu_kernel_supported(at::zeros({1, 2})); }

// Gates from -12 to 12 (GELU's tails, where 1 + erf(x/√2) is tiny or 2), values and gradients of unit size.
// The error is held to 2·10⁻⁶ of the largest value (measured: up to 8·10⁻⁷; the erf approximation is within 1.5·10⁻⁷),
// within a factor 4 of libtorch's own float32 ops on the same rows.
TEST(GegluKernel, MatchesFloat64OnRandomRows) {
  if (!kernel_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const int threads_before = at::get_num_threads();
  double worst = 0;
  for (int threads : {1, 3})
    for (const auto& shape : std::vector<std::vector<int64_t>>{{5, 4}, {3, 18}, {2, 5, 80}, {4096, 2 * 1283}}) {
      at::set_num_threads(threads);
      at::Tensor projected = at::randn(shape, gen) * 3;
      projected.select(-1, shape.back() - 1).fill_(-12.0f);  // a far-negative gate
      std::vector<int64_t> out_shape = shape;
      out_shape.back() /= 2;
      const at::Tensor grad = at::randn(out_shape, gen);
      const auto [y_exact, d_exact] = reference(projected, grad);
      const at::Tensor y = tide::kernels::geglu_forward(projected);
      const at::Tensor d = tide::kernels::geglu_backward(projected, grad);
      ASSERT_EQ(y.sizes(), y_exact.sizes());
      ASSERT_EQ(d.sizes(), d_exact.sizes());
      const double y_scale = y_exact.abs().max().item<double>(), d_scale = d_exact.abs().max().item<double>();
      const double y_error = max_abs_diff(y, y_exact) / y_scale, d_error = max_abs_diff(d, d_exact) / d_scale;
      worst = std::max({worst, y_error, d_error});
      EXPECT_LT(y_error, 2e-6) << "threads " << threads << " last dim " << shape.back();
      EXPECT_LT(d_error, 2e-6) << "threads " << threads << " last dim " << shape.back();
      // libtorch's float32 forward on the same rows, for scale.
      const auto halves = projected.chunk(2, -1);
      const double torch_error = max_abs_diff(halves[0] * at::gelu(halves[1]), y_exact) / y_scale;
      EXPECT_LT(y_error, 4 * torch_error + 1e-7) << "threads " << threads << " last dim " << shape.back();
    }
  at::set_num_threads(threads_before);
  std::cout << "GEGLU kernel: worst error / largest value = " << worst << "\n";
  // Not contiguous, not float32, an odd last dimension, a gradient of the wrong shape: refused.
  EXPECT_FALSE(tide::kernels::geglu_kernel_supported(at::randn({4, 6}).t()));
  EXPECT_FALSE(tide::kernels::geglu_kernel_supported(at::randn({4, 6}, at::kDouble)));
  EXPECT_FALSE(tide::kernels::geglu_kernel_supported(at::randn({4, 5})));
  EXPECT_THROW(tide::kernels::geglu_forward(at::randn({4, 5})), c10::Error);
  EXPECT_THROW(tide::kernels::geglu_backward(at::randn({4, 6}), at::randn({4, 2})), c10::Error);
}

// The Geglu module: the kernel's answer bit for bit with the switch on (inference, and training's forward and
// projection gradient through its lean backward), libtorch's gelu and product bit for bit with it off.
TEST(GegluKernel, GegluModuleTakesItWhereSwitchedOn) {
  if (!kernel_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  at::manual_seed(24);
  tide::nn::Geglu geglu(12, 20);
  for (auto& p : geglu->parameters()) p.set_requires_grad(false);
  const at::Tensor x = at::randn({2, 9, 12});
  at::Tensor projected;
  {
    c10::InferenceMode inference;
    projected = geglu->proj->forward(x);
    EXPECT_TRUE(geglu->forward(x).equal(tide::kernels::geglu_forward(projected)));
    tide::runtime::OptimizationsGuard off(tide::runtime::Optimizations().without("geglu_kernel"));
    const auto halves = projected.chunk(2, -1);
    EXPECT_TRUE(geglu->forward(x).equal(at::gelu(halves[1]) * halves[0]));
  }
  // Training against frozen weights: the lean node, with the kernel's forward and gradient.
  const at::Tensor dy = at::randn({2, 9, 20});
  const at::Tensor p = projected.clone().requires_grad_(true);
  const at::Tensor y = tide::nn::geglu_lean(p);
  EXPECT_TRUE(y.detach().equal(tide::kernels::geglu_forward(projected)));
  y.backward(dy);
  EXPECT_TRUE(p.grad().equal(tide::kernels::geglu_backward(projected, dy)));
}

}  // namespace
