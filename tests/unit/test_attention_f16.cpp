// Attention's float16 products (kernels/attention_f16.h): each kernel against the same float16 sums computed
// one rounding at a time in float64 (bit for bit: the kernels' order of additions is part of their contract),
// on odd shapes; blocked attention with float16 products against its float32 kernels; the fallback where values
// do not fit or the CPU lacks AVX512-FP16; the attention module taking them only for int8 projections.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tide/kernels/attention_cpu.h"
#include "tide/kernels/attention_f16.h"
#include "tide/kernels/gemm_avx512.h"
#include "tide/nn/attention.h"
#include "tide/nn/weight_storage.h"
#include "tide/runtime/optimizations.h"

namespace {

using namespace tide::kernels;

constexpr const char* kNoFp16 = "this CPU has no AVX512-FP16 (or DNNL_MAX_CPU_ISA caps it, or the compiler lacks it)";

// x rounded to the nearest float16 (ties to even), as a double; finite inputs within float16's range.
double round_half(double x) {
  if (x == 0) return x;
  const int e = std::max(std::ilogb(x), -14);  // float16's smallest normal exponent; below it a fixed step
  const double ulp = std::ldexp(1.0, e - 10);
  return std::nearbyint(x / ulp) * ulp;
}

uint16_t half_bits(double x) {  // x already a float16 value
  const at::Half h(static_cast<float>(x));
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof bits);
  return bits;
}

double half_value(uint16_t bits) {
  at::Half h;
  std::memcpy(&h, &bits, sizeof bits);
  return static_cast<float>(h);
}

std::vector<uint16_t> random_halves(size_t n, std::mt19937& gen, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = half_bits(round_half(normal(gen)));
  return v;
}

// acc + a·b with one rounding to float16 (an FMA).
double fma_half(double acc, uint16_t a, uint16_t b) { return round_half(acc + half_value(a) * half_value(b)); }

constexpr float kSentinel = 12345.0f;

TEST(AttentionHalfProducts, ScoresMatchFloat16SumsBitForBit) {
  if (!attention_half_products_available()) GTEST_SKIP() << kNoFp16;
  std::mt19937 gen(3);
  for (int64_t m : {1, 3, 4, 8, 13, 24})
    for (int64_t n : {1, 5, 16, 17, 47, 48, 77, 100, 301})
      for (int64_t k : {2, 8, 40, 64, 66, 80, 160}) {  // head dimensions; past 64 in float16 chunks
        const int64_t lda = k + 2, ldb = 2 * n + 6, ldc = n + 3;
        const auto a = random_halves(m * lda, gen, 0.5f);
        const auto b = random_halves(k / 2 * ldb, gen, 1.0f);
        std::vector<float> c(m * ldc, kSentinel);
        std::vector<float> row_max(m);
        for (int64_t i = 0; i < m; ++i) row_max[i] = i % 3 == 2 ? 1e6f : -INFINITY;
        scores_half(m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc, row_max.data());
        for (int64_t i = 0; i < m; ++i) {
          double max = i % 3 == 2 ? 1e6 : -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            float want = 0;
            const int64_t chunk = kHalfSumLength / 2;  // pairs summed in float16 before joining the float32 sum
            for (int64_t s0 = 0; s0 < k / 2; s0 += chunk) {
              double even = 0, odd = 0;  // the two lanes of output j: the pair's first and second terms
              for (int64_t s = s0; s < std::min(k / 2, s0 + chunk); ++s) {
                even = fma_half(even, a[i * lda + 2 * s], b[s * ldb + 2 * j]);
                odd = fma_half(odd, a[i * lda + 2 * s + 1], b[s * ldb + 2 * j + 1]);
              }
              const float part = float(round_half(even + odd));
              want = s0 == 0 ? part : float(double(want) + double(part));
            }
            ASSERT_EQ(c[i * ldc + j], want) << "m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
            max = std::max(max, double(want));
          }
          for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], kSentinel) << "wrote past the row";
          ASSERT_EQ(row_max[i], float(max)) << "m=" << m << " n=" << n << " k=" << k << " row " << i;
        }
      }
}

TEST(AttentionHalfProducts, ProbsTimesValuesMatchFloat16SumsBitForBit) {
  if (!attention_half_products_available()) GTEST_SKIP() << kNoFp16;
  std::mt19937 gen(4);
  std::uniform_real_distribution<float> prob(0.0f, 1.0f);
  for (int64_t m : {1, 4, 8, 11, 24})
    for (int64_t n : {1, 7, 16, 40, 48, 64, 80})
      for (int64_t k : {2, 30, 64, 66, 200})  // keys: within one float16 chunk, just past one, several
        for (bool accumulate : {false, true}) {
          const int64_t ldp = k + 4, ldv = 2 * n + 2, ldc = n + 5;
          std::vector<uint16_t> p(m * ldp);
          for (auto& x : p) x = half_bits(round_half(prob(gen)));
          const auto v = random_halves(k / 2 * ldv, gen, 1.0f);
          std::vector<float> c(m * ldc, kSentinel);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = float(i - j) * 0.25f;
          const std::vector<float> start = c;
          gemm_half(m, n, k, p.data(), ldp, v.data(), ldv, c.data(), ldc, accumulate);
          const int64_t chunk = kHalfSumLength / 2;  // pairs summed in float16 before joining the float32 sum
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              float want = accumulate ? start[i * ldc + j] : 0.0f;
              for (int64_t s0 = 0; s0 < k / 2; s0 += chunk) {
                double even = 0, odd = 0;
                for (int64_t s = s0; s < std::min(k / 2, s0 + chunk); ++s) {
                  even = fma_half(even, p[i * ldp + 2 * s], v[s * ldv + 2 * j]);
                  odd = fma_half(odd, p[i * ldp + 2 * s + 1], v[s * ldv + 2 * j + 1]);
                }
                const float part = float(round_half(even + odd));
                want = (accumulate || s0 > 0) ? float(double(want) + double(part)) : part;
              }
              ASSERT_EQ(c[i * ldc + j], want)
                  << "m=" << m << " n=" << n << " k=" << k << " accumulate=" << accumulate << " at " << i << "," << j;
            }
            for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], kSentinel) << "wrote past the row";
          }
        }
}

TEST(AttentionHalfProducts, ExpRowToHalfRoundsTheFloat32Exp) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512F (or DNNL_MAX_CPU_ISA caps it)";
  std::mt19937 gen(9);
  std::uniform_real_distribution<float> scores(-20.0f, 4.0f);
  for (int64_t n : {1, 13, 16, 17, 32, 33, 77, 4096}) {
    std::vector<float> x(n);
    for (auto& s : x) s = scores(gen);
    float max = -INFINITY;
    for (float s : x) max = std::max(max, s);
    for (float scale : {1.0f, 0.158f}) {  // unscaled scores: the scale applies to x − max
      std::vector<float> exps(n);
      for (int64_t i = 0; i < n; ++i) exps[i] = (x[i] - max) * scale;
      const float want_sum = exp_row_avx512(exps.data(), n, 0.0f);
      std::vector<uint16_t> half(n + 3, 0xABCD);
      const std::vector<float> before = x;
      const float sum = exp_row_to_half_avx512(x.data(), n, max, scale, half.data());
      EXPECT_EQ(sum, want_sum) << "n=" << n << " scale=" << scale;
      EXPECT_EQ(x, before) << "the scores must stay as they were";
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(half[i], half_bits(round_half(exps[i]))) << "n=" << n << " scale=" << scale << " i=" << i;
      for (int64_t i = n; i < n + 3; ++i) ASSERT_EQ(half[i], 0xABCD) << "wrote past the row";
    }
  }
}

TEST(AttentionHalfProducts, PackingMatchesLibtorchsFloat16AndFindsTheMaxima) {
  if (!attention_half_products_available()) GTEST_SKIP() << kNoFp16;
  at::manual_seed(5);
  for (int64_t n : {1, 2, 7, 77, 130})
    for (int64_t d : {2, 8, 40, 64, 80, 160}) {
      const int64_t ld = d + 3;
      at::Tensor x = at::randn({n, ld}) * 3;
      x[n / 2][d / 2] = 70000.0f;  // beyond float16: infinity in both conversions
      const at::Tensor rows_f = x.narrow(1, 0, d);                       // [n, d], row stride ld
      const at::Tensor want = rows_f.to(at::kHalf).contiguous();           // at::Half's rounding
      const float want_max = rows_f.abs().max().item<float>();
      const auto bits = [](const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data_ptr<at::Half>()); };
      const uint16_t* w = bits(want);
      std::vector<uint16_t> out(n * d + 4, 0xABCD);
      EXPECT_EQ(pack_half_rows(x.data_ptr<float>(), ld, n, d, out.data()), want_max);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < d; ++c) ASSERT_EQ(out[j * d + c], w[j * d + c]) << "rows n=" << n << " d=" << d;
      EXPECT_EQ(out[n * d], 0xABCD);
      std::vector<uint16_t> cols(n * d + 4, 0xABCD);
      EXPECT_EQ(pack_half_column_pairs(x.data_ptr<float>(), ld, n, d, cols.data()), want_max);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < d; ++c)
          ASSERT_EQ(cols[(c / 2) * 2 * n + 2 * j + c % 2], w[j * d + c]) << "column pairs n=" << n << " d=" << d;
      EXPECT_EQ(cols[n * d], 0xABCD);
      const int64_t ne = n + n % 2;
      std::vector<uint16_t> pairs(ne * d + 4, 0xABCD);
      EXPECT_EQ(pack_half_row_pairs(x.data_ptr<float>(), ld, n, d, pairs.data()), want_max);
      for (int64_t j = 0; j < ne; ++j)
        for (int64_t c = 0; c < d; ++c)
          ASSERT_EQ(pairs[(j / 2) * 2 * d + 2 * c + j % 2], j < n ? w[j * d + c] : uint16_t(0))
              << "row pairs n=" << n << " d=" << d << " at " << j << "," << c;
      EXPECT_EQ(pairs[ne * d], 0xABCD);
      x[0][0] = NAN;
      EXPECT_TRUE(std::isnan(pack_half_rows(x.data_ptr<float>(), ld, n, d, out.data())));
      EXPECT_TRUE(std::isnan(pack_half_row_pairs(x.data_ptr<float>(), ld, n, d, pairs.data())));
    }
}

TEST(BlockedAttentionHalf, FallsBackWhereAValueIsNotANumber) {
  c10::InferenceMode inference;
  at::manual_seed(24);
  at::Tensor q = at::randn({1, 2, 20, 40}), k = at::randn({1, 2, 20, 40}), v = at::randn({1, 2, 20, 40});
  v[0][1][3][5] = NAN;
  const at::Tensor f32 = blocked_attention(q, k, v, 0, true, false), f16 = blocked_attention(q, k, v, 0, true, true);
  EXPECT_TRUE(at::allclose(f16, f32, 0, 0, /*equal_nan=*/true)) << "NaN inputs take the float32 kernels";
}

TEST(AttentionHalfProducts, FitBoundsTheFloat16Sums) {
  EXPECT_TRUE(attention_half_products_fit(40, 1.0f, 3.0f, 3.0f));
  EXPECT_TRUE(attention_half_products_fit(160, 16.0f, 32.0f, 1.0f));   // sums of 64 terms at most: 64·16·32 = 2^15
  EXPECT_TRUE(attention_half_products_fit(64, 16.0f, 32.0f, 512.0f));   // 64·16·32 = 2^15; 64·512 = 2^15
  EXPECT_FALSE(attention_half_products_fit(64, 16.0f, 32.5f, 1.0f));   // scores could pass 2^15
  EXPECT_FALSE(attention_half_products_fit(40, 1.0f, 1.0f, 513.0f));   // a chunk of probs·v could
  EXPECT_FALSE(attention_half_products_fit(258, 0.1f, 0.1f, 0.1f));    // a head wider than kHalfHeadDimMax
  EXPECT_FALSE(attention_half_products_fit(0, 0.1f, 0.1f, 0.1f));
  EXPECT_FALSE(attention_half_products_fit(40, NAN, 1.0f, 1.0f));
  EXPECT_FALSE(attention_half_products_fit(40, 1.0f, 1.0f, INFINITY));
}

double relative_l2(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).norm().item<double>() / want.norm().item<double>();
}

// [B, H, L, d] views of [B, L, H, d] tensors, as the attention module makes them.
at::Tensor heads(int64_t b, int64_t h, int64_t l, int64_t d, float scale = 1.0f) {
  return (at::randn({b, l, h, d}) * scale).transpose(1, 2);
}

TEST(BlockedAttentionHalf, CloseToFloat32KernelsOnOddShapes) {
  c10::InferenceMode inference;
  at::manual_seed(21);
  struct Shape { int64_t b, h, lq, lk, d; };
  for (const Shape s : {Shape{2, 8, 300, 300, 40}, Shape{1, 3, 97, 77, 40}, Shape{2, 2, 64, 201, 64},
                        Shape{1, 2, 70, 77, 80}, Shape{1, 2, 40, 40, 160}, Shape{1, 2, 50, 33, 8},
                        Shape{1, 1, 5, 1, 2}}) {
    const at::Tensor q = heads(s.b, s.h, s.lq, s.d), k = heads(s.b, s.h, s.lk, s.d), v = heads(s.b, s.h, s.lk, s.d);
    const at::Tensor f32 = blocked_attention(q, k, v, 0, true, /*half_products=*/false);
    const at::Tensor f16 = blocked_attention(q, k, v, 0, true, /*half_products=*/true);
    const std::string what = "b=" + std::to_string(s.b) + " h=" + std::to_string(s.h) + " lq=" + std::to_string(s.lq) +
                             " lk=" + std::to_string(s.lk) + " d=" + std::to_string(s.d);
    ASSERT_EQ(f16.sizes(), f32.sizes()) << what;
    if (!attention_half_products_available()) {
      EXPECT_TRUE(at::equal(f16, f32)) << "without AVX512-FP16 the float32 kernels run: " << what;
      continue;
    }
    // Float16 has 11 significant bits (4.9e-4): the outputs within a few of its steps, and not the float32 ones.
    EXPECT_LT(relative_l2(f16, f32), 3e-3) << what;  // measured 1.0–1.7e-3
    if (s.lk > 1) {
      EXPECT_FALSE(at::equal(f16, f32)) << "the float16 products did not run: " << what;
    }
  }
}

TEST(BlockedAttentionHalf, FallsBackToFloat32WhereValuesDoNotFit) {
  c10::InferenceMode inference;
  at::manual_seed(22);
  const at::Tensor q = heads(1, 2, 40, 40, 40), k = heads(1, 2, 40, 40, 40);
  for (const at::Tensor& v : {heads(1, 2, 40, 40, 1000.0f), heads(1, 2, 40, 40, 1.0f) + 600.0f}) {
    const at::Tensor f32 = blocked_attention(q, k, v, 0, true, false);
    EXPECT_TRUE(at::equal(blocked_attention(q, k, v, 0, true, true), f32));
  }
  // Heads wider than kHalfHeadDimMax keep float32 products.
  const at::Tensor qw = heads(1, 1, 9, 258), kw = heads(1, 1, 9, 258), vw = heads(1, 1, 9, 258);
  EXPECT_TRUE(at::equal(blocked_attention(qw, kw, vw, 0, true, true), blocked_attention(qw, kw, vw, 0, true, false)));
  // So do odd head dimensions, and the AVX2 kernels (allow_avx512 = false).
  const at::Tensor q7 = heads(1, 2, 30, 7, 7), k7 = heads(1, 2, 31, 7, 7), v7 = heads(1, 2, 31, 7, 7);
  EXPECT_TRUE(at::equal(blocked_attention(q7, k7, v7, 0, true, true), blocked_attention(q7, k7, v7, 0, true, false)));
  const at::Tensor v = heads(1, 2, 40, 40, 40);
  EXPECT_TRUE(at::equal(blocked_attention(q, k, v, 0, false, true), blocked_attention(q, k, v, 0, false, false)));
}

TEST(BlockedAttentionHalf, AttentionModuleTakesThemOnlyWithInt8Projections) {
  c10::InferenceMode inference;
  at::manual_seed(23);
  tide::nn::AttentionOptions o;
  o.query_dim = 80;
  o.heads = 2;
  o.dim_head = 40;
  tide::nn::Attention attn(o);
  const at::Tensor x = at::randn({1, 150, 80});
  auto forward_with = [&](bool half_attention) {
    tide::runtime::Optimizations options;
    options.half_attention = half_attention;
    tide::runtime::OptimizationsGuard guard(options);
    return attn->forward(x);
  };
  EXPECT_TRUE(at::equal(forward_with(true), forward_with(false))) << "float32 projections: float32 products";
  tide::nn::convert_weight_storage(*attn, [](const std::string&) { return tide::nn::WeightFormat::kInt8; });
  const at::Tensor with = forward_with(true), without = forward_with(false);
  if (!attention_half_products_available()) {
    EXPECT_TRUE(at::equal(with, without)) << "without AVX512-FP16 the float32 kernels run";
    return;
  }
  EXPECT_FALSE(at::equal(with, without)) << "int8 projections: the float16 products did not run";
  EXPECT_LT(relative_l2(with, without), 5e-3);
}

}  // namespace
