// The blocked attention kernel against plain attention (baddbmm, softmax, bmm) on random inputs of
// several shapes, odd sizes and strided layouts included, and the Attention module with it on and off.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "test_support.h"
#include "tide/runtime/cpu_features.h"
#include "tide/kernels/attention_cpu.h"
#include "tide/kernels/gemm_avx512.h"
#include "tide/nn/attention.h"
#include "tide/runtime/flop_counter.h"
#include "tide/runtime/optimizations.h"

namespace {

using tide::runtime::Optimizations;
using tide::runtime::OptimizationsGuard;

at::Tensor plain_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  OptimizationsGuard plain(Optimizations::plain());
  return tide::nn::scaled_dot_product_attention(q, k, v);
}

struct Shape {
  int64_t b, h, lq, lk, d;
};

TEST(BlockedAttention, MatchesPlainOnRandomShapes) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const Shape shapes[] = {{1, 1, 1, 1, 1},   {2, 8, 64, 64, 40}, {1, 3, 37, 77, 24}, {2, 5, 129, 77, 64},
                          {1, 2, 301, 300, 17}, {1, 1, 1000, 513, 160}, {2, 1, 70, 70, 512}};
  if (!tide::kernels::gemm_avx512_available())
    tide::testing::note_path_not_exercised("the AVX-512 kernels", "this CPU has no AVX-512F (or DNNL_MAX_CPU_ISA caps it)");
  if (!tide::runtime::has_cpu_feature("avx2"))
    tide::testing::note_path_not_exercised("the AVX2 micro-kernels", "this CPU has no AVX2 (the plain fallback ran)");
  for (const auto& s : shapes) {
    // Strided like the attention module's heads: [B, L, H, d] viewed as [B, H, L, d].
    const at::Tensor q = at::randn({s.b, s.lq, s.h, s.d}, gen).transpose(1, 2);
    const at::Tensor k = at::randn({s.b, s.lk, s.h, s.d}, gen).transpose(1, 2) * 3;  // peaky softmax
    const at::Tensor v = at::randn({s.b, s.lk, s.h, s.d}, gen).transpose(1, 2);
    const at::Tensor expected = plain_attention(q, k, v);
    // Blocks that are and are not multiples of the 6-row and 4-row tiles; the AVX-512 kernels (where the CPU
    // has them) and the AVX2 ones.
    for (int64_t block : {0, 1, 7, 18, 30, 256}) {
      for (bool avx512 : {true, false}) {
        const at::Tensor got = tide::kernels::blocked_attention(q, k, v, block, avx512);
        ASSERT_EQ(got.sizes(), expected.sizes());
        EXPECT_LT(tide::testing::max_abs_diff(got, expected), 2e-5) << "b=" << s.b << " h=" << s.h << " lq=" << s.lq
                                                                    << " lk=" << s.lk << " d=" << s.d
                                                                    << " block=" << block << " avx512=" << avx512;
      }
    }
    // Contiguous [B, H, L, d] inputs too.
    EXPECT_LT(tide::testing::max_abs_diff(
                  tide::kernels::blocked_attention(q.contiguous(), k.contiguous(), v.contiguous()), expected),
              2e-5);
  }
}

TEST(BlockedAttention, OutputMergesHeadsWithoutCopy) {
  const at::Tensor q = at::randn({2, 4, 10, 8}), k = at::randn({2, 4, 6, 8}), v = at::randn({2, 4, 6, 8});
  const at::Tensor out = tide::kernels::blocked_attention(q, k, v);  // [B, H, L, d] over [B, L, H, d]
  EXPECT_TRUE(out.transpose(1, 2).is_contiguous());
}

TEST(BlockedAttention, SupportedOnlyWithoutGradientAndForFloat32) {
  const at::Tensor q = at::randn({1, 2, 4, 8}), k = at::randn({1, 2, 4, 8}), v = at::randn({1, 2, 4, 8});
  EXPECT_TRUE(tide::kernels::blocked_attention_supported(q, k, v));
  EXPECT_FALSE(tide::kernels::blocked_attention_supported(q.to(at::kDouble), k, v));
  EXPECT_FALSE(tide::kernels::blocked_attention_supported(q.clone().requires_grad_(), k, v));
  EXPECT_FALSE(tide::kernels::blocked_attention_supported(q, k, at::randn({1, 2, 4, 7})));
}

TEST(BlockedAttention, AttentionModuleSameWithAndWithoutOptimizations) {
  c10::InferenceMode inference;
  tide::nn::AttentionOptions o;
  o.query_dim = 48;
  o.heads = 3;
  o.dim_head = 16;
  o.cross_attention_dim = 32;
  tide::nn::Attention attn(o);
  const at::Tensor x = at::randn({2, 33, 48}), ctx = at::randn({2, 7, 32});
  const at::Tensor optimized = attn->forward(x, ctx);
  at::Tensor plain;
  {
    OptimizationsGuard guard(Optimizations::plain());
    plain = attn->forward(x, ctx);
  }
  EXPECT_LT(tide::testing::max_abs_diff(optimized, plain), 1e-5);
}

TEST(FlopCount, CountsAttentionProductsAnalytically) {
  const at::Tensor q = at::randn({2, 3, 5, 4}), k = at::randn({2, 3, 7, 4}), v = at::randn({2, 3, 7, 4});
  tide::runtime::FlopCount count;
  tide::nn::scaled_dot_product_attention(q, k, v);
  EXPECT_DOUBLE_EQ(count.flops(), 2.0 * 2 * (2 * 3 * 5 * 7 * 4));  // two products, 2 flops per multiply-add
}

}  // namespace
