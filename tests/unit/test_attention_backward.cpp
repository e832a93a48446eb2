// Blocked attention's backward (recomputed strip by strip) against autograd through plain attention
// (baddbmm, softmax, bmm), on random shapes with strided head views, and the attention module and
// scaled_dot_product_attention using it when gradients are needed.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include "test_support.h"
#include "tide/kernels/attention_autograd.h"
#include "tide/nn/attention.h"
#include "tide/runtime/optimizations.h"

namespace {

using tide::runtime::Optimizations;
using tide::runtime::OptimizationsGuard;

struct Shape {
  int64_t b, h, lq, lk, d;
};

// Leaf q, k, v [B, L, H, d] seen as [B, H, L, d] (as the attention module splits heads) and the gradients
// of sum(out ∘ w) with respect to them.
struct Case {
  at::Tensor q, k, v, w;
  Case(const Shape& s, at::Generator& gen) {
    auto heads = [&](int64_t l, double scale) {
      return (at::randn({s.b, l, s.h, s.d}, gen) * scale).requires_grad_();
    };
    q = heads(s.lq, 1.0);
    k = heads(s.lk, 2.0);  // peaky softmax
    v = heads(s.lk, 1.0);
    w = at::randn({s.b, s.h, s.lq, s.d}, gen);
  }
  template <class Attention>
  std::vector<at::Tensor> grads(Attention&& attention) const {
    const at::Tensor out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
    return torch::autograd::grad({(out * w).sum()}, {q, k, v});
  }
};

std::vector<at::Tensor> plain_grads(const Case& c) {
  OptimizationsGuard plain(Optimizations::plain());
  return c.grads([](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return tide::nn::scaled_dot_product_attention(q, k, v);
  });
}

// max |got - expected| relative to max |expected| (absolute where expected is all zero: dq and dk with a
// single key).
double relative_error(const at::Tensor& got, const at::Tensor& expected) {
  const double diff = tide::testing::max_abs_diff(got, expected), scale = expected.abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

TEST(BlockedAttentionBackward, GradientsMatchPlainAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  // Odd lengths, cross-attention over 77 text tokens, SD head sizes 40/64/80, and a single token.
  const Shape shapes[] = {{1, 1, 1, 1, 8},     {2, 8, 64, 64, 40},  {1, 3, 37, 77, 40},  {2, 5, 129, 77, 64},
                          {1, 2, 301, 300, 80}, {1, 8, 257, 77, 40}, {2, 1, 200, 133, 64}};
  for (const auto& s : shapes) {
    const Case c(s, gen);
    const auto expected = plain_grads(c);
    // Strips of one row, of sizes that do not divide the lengths, and the automatic size (one strip here).
    for (int64_t rows : {0, 1, 7, 64}) {
      const auto got = c.grads([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
        return tide::kernels::blocked_attention_autograd(q, k, v, rows);
      });
      for (int i = 0; i < 3; ++i) {
        ASSERT_EQ(got[i].sizes(), expected[i].sizes());
        EXPECT_LT(relative_error(got[i], expected[i]), 1e-5)
            << "d" << "qkv"[i] << " b=" << s.b << " h=" << s.h << " lq=" << s.lq << " lk=" << s.lk << " d=" << s.d
            << " rows=" << rows;
      }
    }
  }
}

TEST(BlockedAttentionBackward, OnlyNeededGradientsAreComputed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(6);
  const Case c({1, 2, 50, 77, 40}, gen);
  const auto expected = plain_grads(c);
  // Cross-attention in the first UNet block: the queries come from the noisy latents, no gradient.
  const at::Tensor q = c.q.detach().transpose(1, 2);
  const at::Tensor out = tide::kernels::blocked_attention_autograd(q, c.k.transpose(1, 2), c.v.transpose(1, 2), 16);
  const auto grads = torch::autograd::grad({(out * c.w).sum()}, {c.k, c.v});
  EXPECT_LT(relative_error(grads[0], expected[1]), 1e-5);
  EXPECT_LT(relative_error(grads[1], expected[2]), 1e-5);

  const at::Tensor dout = at::randn({1, 2, 50, 40}, gen);
  const at::Tensor k = c.k.detach().transpose(1, 2), v = c.v.detach().transpose(1, 2);
  const auto only_dk = tide::kernels::blocked_attention_backward(dout, q, k, v, out.detach(), 16, {false, true, false});
  EXPECT_FALSE(only_dk[0].defined());
  EXPECT_TRUE(only_dk[1].defined());
  EXPECT_FALSE(only_dk[2].defined());
}

TEST(BlockedAttentionBackward, SecondOrderGradientsAreRefused) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const Case c({1, 2, 9, 9, 8}, gen);
  const at::Tensor out = tide::kernels::blocked_attention_autograd(c.q.transpose(1, 2), c.k.transpose(1, 2),
                                                                   c.v.transpose(1, 2));
  EXPECT_THROW(torch::autograd::grad({out.sum()}, {c.q}, {}, /*retain_graph=*/true, /*create_graph=*/true),
               c10::Error);
}

TEST(BlockedAttentionBackward, StripStaysWithinItsBudget) {
  for (int64_t bh : {1, 8, 16, 40}) {
    for (int64_t lk : {77, 1024, 4096, 16384}) {
      const int64_t rows = tide::kernels::attention_backward_strip_rows(bh, lk);
      EXPECT_GE(rows, 1);
      EXPECT_LE(rows * bh * lk * 4, tide::kernels::kAttentionBackwardStripBytes) << bh << " x " << lk;
      EXPECT_GT((rows + 1) * bh * lk * 4, tide::kernels::kAttentionBackwardStripBytes) << bh << " x " << lk;
    }
  }
  // A single row larger than the budget still makes progress.
  EXPECT_EQ(tide::kernels::attention_backward_strip_rows(1 << 20, 1 << 20), 1);
}

TEST(BlockedAttentionBackward, ScaledDotProductAttentionUsesItForGradients) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const Case c({1, 2, 20, 20, 16}, gen);
  auto sdpa = [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return tide::nn::scaled_dot_product_attention(q, k, v);
  };
  const at::Tensor out = sdpa(c.q.transpose(1, 2), c.k.transpose(1, 2), c.v.transpose(1, 2));
  ASSERT_TRUE(out.grad_fn());
  EXPECT_NE(out.grad_fn()->name().find("BlockedAttention"), std::string::npos) << out.grad_fn()->name();
  const auto expected = plain_grads(c);
  const auto got = c.grads(sdpa);
  for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(got[i], expected[i]), 1e-5);
  {
    OptimizationsGuard plain(Optimizations::plain());  // --plain stays plain
    const at::Tensor plain_out = sdpa(c.q.transpose(1, 2), c.k.transpose(1, 2), c.v.transpose(1, 2));
    EXPECT_EQ(plain_out.grad_fn()->name().find("BlockedAttention"), std::string::npos);
  }
  // bf16 inputs: computed in float32, gradients back in bf16.
  const at::Tensor qb = c.q.detach().to(at::kBFloat16).requires_grad_();
  const at::Tensor bf16_out = sdpa(qb.transpose(1, 2), c.k.detach().to(at::kBFloat16).transpose(1, 2),
                                   c.v.detach().to(at::kBFloat16).transpose(1, 2));
  const at::Tensor dq = torch::autograd::grad({(bf16_out.to(at::kFloat) * c.w).sum()}, {qb})[0];
  EXPECT_EQ(dq.scalar_type(), at::kBFloat16);
  EXPECT_LT(relative_error(dq, expected[0]), 0.05);
}

TEST(BlockedAttentionBackward, AttentionModuleGradientsSameWithAndWithoutOptimizations) {
  torch::manual_seed(9);
  tide::nn::AttentionOptions o;
  o.query_dim = 48;
  o.heads = 3;
  o.dim_head = 16;
  o.cross_attention_dim = 32;
  tide::nn::Attention attn(o);
  const at::Tensor x = at::randn({2, 33, 48}).requires_grad_(), ctx = at::randn({2, 7, 32}).requires_grad_();
  auto grads = [&] {
    return torch::autograd::grad({attn->forward(x, ctx).square().sum()},
                                 {x, ctx, attn->to_q->weight, attn->to_k->weight, attn->to_v->weight});
  };
  const auto optimized = grads();
  std::vector<at::Tensor> plain;
  {
    OptimizationsGuard guard(Optimizations::plain());
    plain = grads();
  }
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_LT(relative_error(optimized[i], plain[i]), 1e-5) << i;
}

}  // namespace
