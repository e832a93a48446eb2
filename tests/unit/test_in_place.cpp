// The in_place optimization: same values as the allocating forms, the temporary's memory reused, and
// nothing overwritten that autograd needs.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include "test_support.h"
#include "tide/nn/in_place.h"
#include "tide/runtime/optimizations.h"

namespace {
using tide::runtime::Optimizations;
using tide::runtime::OptimizationsGuard;

TEST(InPlace, SameValuesAndTheTemporarysMemory) {
  c10::InferenceMode inference;
  at::manual_seed(0);
  const at::Tensor a = at::randn({2, 8, 5, 5}), b = at::randn({2, 8, 5, 5}), bias = at::randn({2, 8, 1, 1});
  at::Tensor t = a.clone();
  const void* memory = t.data_ptr();
  const at::Tensor sum = tide::nn::add_to_temporary(t, b);
  EXPECT_EQ(sum.data_ptr(), memory);
  EXPECT_TRUE(at::equal(sum, a + b));  // bit-identical
  const at::Tensor silu = tide::nn::silu_temporary(sum);
  EXPECT_EQ(silu.data_ptr(), memory);
  EXPECT_TRUE(at::equal(silu, at::silu(a + b)));
  at::Tensor u = a.clone();
  EXPECT_TRUE(at::equal(tide::nn::add_to_temporary(u, bias), a + bias));  // broadcast operand
  EXPECT_TRUE(at::equal(tide::nn::gelu_gated(a, b), a * at::gelu(b)));
  // A temporary smaller than the result is never written into.
  at::Tensor small = bias.clone();
  EXPECT_TRUE(at::equal(tide::nn::add_to_temporary(small, a), bias + a));
  EXPECT_TRUE(at::equal(small, bias));
}

TEST(InPlace, OffOrUnderAutogradNothingIsOverwritten) {
  at::manual_seed(1);
  const at::Tensor a = at::randn({4, 6}), b = at::randn({4, 6});
  {
    OptimizationsGuard plain(Optimizations::plain());
    at::Tensor t = a.clone();
    const at::Tensor sum = tide::nn::add_to_temporary(t, b);
    EXPECT_NE(sum.data_ptr(), t.data_ptr());
    EXPECT_TRUE(at::equal(t, a));
  }
  // Training: the gradient through silu and the residual add is the allocating forms' gradient.
  const at::Tensor x = a.clone().requires_grad_(true);
  at::Tensor y = tide::nn::silu_temporary(x * 2.0);
  y = tide::nn::add_to_temporary(y, x);
  y = tide::nn::gelu_gated(y, x);
  y.sum().backward();
  const at::Tensor x2 = a.clone().requires_grad_(true);
  const at::Tensor y2 = (at::silu(x2 * 2.0) + x2) * at::gelu(x2);
  y2.sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), x2.grad()));
}

}  // namespace
