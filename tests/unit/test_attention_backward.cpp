// Blocked attention's backward (recomputed strip by strip: AVX2 micro-kernels per head, or BLAS over all
// heads) against autograd through plain attention (baddbmm, softmax, bmm), on random shapes with strided
// head views, and the attention module and scaled_dot_product_attention using it when gradients are needed.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include "test_support.h"
#include "tide/kernels/attention_autograd.h"
#include "tide/kernels/attention_cpu.h"
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

// The gradients to q, k, v [B, L, H, d] from blocked_attention_backward called directly (dO = w).
std::vector<at::Tensor> direct_grads(const Case& c, const tide::kernels::AttentionBackwardOptions& options) {
  const at::Tensor q = c.q.detach().transpose(1, 2), k = c.k.detach().transpose(1, 2), v = c.v.detach().transpose(1, 2);
  const auto g = tide::kernels::blocked_attention_backward(c.w, q, k, v, tide::kernels::blocked_attention(q, k, v),
                                                           options);
  return {g[0].transpose(1, 2), g[1].transpose(1, 2), g[2].transpose(1, 2)};
}

TEST(BlockedAttentionBackward, GradientsMatchPlainAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  // Odd lengths, cross-attention over 77 text tokens, SD head sizes 40/64/80, and a single token.
  const Shape shapes[] = {{1, 1, 1, 1, 8},     {2, 8, 64, 64, 40},  {1, 3, 37, 77, 40},  {2, 5, 129, 77, 64},
                          {1, 2, 301, 300, 80}, {1, 8, 257, 77, 40}, {2, 1, 200, 133, 64}};
  for (const auto& s : shapes) {
    const Case c(s, gen);
    const auto expected = plain_grads(c);
    // Strips of one row, of sizes that do not divide the lengths, and the automatic size.
    for (int64_t rows : {0, 1, 7, 64}) {
      auto check = [&](const std::vector<at::Tensor>& got, const char* path) {
        for (int i = 0; i < 3; ++i) {
          ASSERT_EQ(got[i].sizes(), expected[i].sizes());
          EXPECT_LT(relative_error(got[i], expected[i]), 1e-5)
              << "d" << "qkv"[i] << " " << path << " b=" << s.b << " h=" << s.h << " lq=" << s.lq << " lk=" << s.lk
              << " d=" << s.d << " rows=" << rows;
        }
      };
      // Through autograd (the AVX-512VL tiles where the CPU has them), then the AVX2 tiles and the BLAS path.
      check(c.grads([&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
              return tide::kernels::blocked_attention_autograd(q, k, v, rows);
            }),
            "autograd");
      tide::kernels::AttentionBackwardOptions options;
      options.strip_rows = rows;
      options.allow_avx512 = false;
      check(direct_grads(c, options), "avx2");
      options.own_kernels = false;
      check(direct_grads(c, options), "blas");
    }
  }
}

TEST(BlockedAttentionBackward, HeadsSplitAcrossThreadsWhenFewerThanThreads) {
  // One head on three threads: its strips in three chunks, each with its own dk/dv sums.
  const int threads = at::get_num_threads();
  at::set_num_threads(3);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(10);
  const Case c({1, 1, 100, 77, 40}, gen);
  const auto expected = plain_grads(c);
  tide::kernels::AttentionBackwardOptions options;
  options.strip_rows = 7;
  const auto got = direct_grads(c, options);
  at::set_num_threads(threads);
  for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(got[i], expected[i]), 1e-5) << i;
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

  const at::Tensor k = c.k.detach().transpose(1, 2), v = c.v.detach().transpose(1, 2);
  for (bool own : {true, false}) {
    tide::kernels::AttentionBackwardOptions options;
    options.needed = {false, true, false};
    options.own_kernels = own;
    const auto only_dk = tide::kernels::blocked_attention_backward(c.w, q, k, v, out.detach(), options);
    EXPECT_FALSE(only_dk[0].defined());
    ASSERT_TRUE(only_dk[1].defined());
    EXPECT_FALSE(only_dk[2].defined());
    EXPECT_LT(relative_error(only_dk[1].transpose(1, 2), expected[1]), 1e-5);
  }
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
  using tide::kernels::attention_backward_strip_rows;
  for (int64_t bh : {1, 8, 16, 40}) {
    for (int64_t lk : {77, 1024, 4096, 16384}) {
      // BLAS path: the [B·H, rows, Lk] strip within its budget, and as tall as fits.
      const int64_t rows = attention_backward_strip_rows(bh, lk, /*own_kernels=*/false);
      EXPECT_GE(rows, 1);
      EXPECT_LE(rows * bh * lk * 4, tide::kernels::kAttentionBackwardBlasStripBytes) << bh << " x " << lk;
      EXPECT_GT((rows + 1) * bh * lk * 4, tide::kernels::kAttentionBackwardBlasStripBytes) << bh << " x " << lk;
      // AVX2 path: one head's P and dS strips in ~512 KiB, whole score tiles of 6 rows.
      const int64_t own = attention_backward_strip_rows(bh, lk);
      EXPECT_EQ(own % 6, 0);
      EXPECT_TRUE(own == 6 || 2 * own * lk * 4 <= (512 << 10)) << lk;
    }
  }
  // A single row larger than the budget still makes progress.
  EXPECT_EQ(attention_backward_strip_rows(1 << 20, 1 << 20, false), 1);
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
