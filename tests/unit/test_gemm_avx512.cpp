// The 512-bit kernels (products with and without row maxima, exp of a row) against float64 loops on
// random inputs: widths that fill no vector, one, or a masked last one; row counts that leave partial tiles;
// leading dimensions wider than the rows, with what lies past a row left untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "tide/kernels/gemm_avx512.h"

namespace {

using tide::kernels::gemm_avx512_available;

std::vector<float> random_floats(size_t n, std::mt19937& gen, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

// C[m, n] = A[m, k] · B[k, n] in float64 (row-major with leading dimensions).
std::vector<double> product64(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                              int64_t ldb) {
  std::vector<double> c(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += double(a[i * lda + p]) * double(b[p * ldb + j]);
  return c;
}

constexpr float kSentinel = 12345.0f;  // what lies past each row of an output; must survive

TEST(GemmAvx512, RowMaxProductMatchesFloat64) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512F (or DNNL_MAX_CPU_ISA caps it)";
  std::mt19937 gen(7);
  for (int64_t m : {1, 5, 8, 13, 24, 37})
    for (int64_t n : {1, 7, 16, 17, 48, 77, 100, 301})
      for (int64_t k : {1, 24, 40, 64}) {
        const int64_t ldq = k + 3, ldk = n + 5, lds = n + 2;
        const auto q = random_floats(m * ldq, gen), kt = random_floats(k * ldk, gen);
        std::vector<float> s(m * lds, kSentinel);
        // Some rows start with a maximum above every score (kept), the others at -inf.
        std::vector<float> row_max(m);
        for (int64_t i = 0; i < m; ++i) row_max[i] = i % 3 == 2 ? 1e6f : -std::numeric_limits<float>::infinity();
        tide::kernels::gemm_row_max_f32_avx512(m, n, k, q.data(), ldq, kt.data(), ldk, s.data(), lds, row_max.data());
        const auto want = product64(m, n, k, q.data(), ldq, kt.data(), ldk);
        for (int64_t i = 0; i < m; ++i) {
          double max = i % 3 == 2 ? 1e6 : -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            ASSERT_NEAR(s[i * lds + j], want[i * n + j], 1e-4 * (1 + std::sqrt(double(k))))
                << "m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
            max = std::max(max, double(s[i * lds + j]));
          }
          for (int64_t j = n; j < lds; ++j) ASSERT_EQ(s[i * lds + j], kSentinel) << "wrote past the row";
          ASSERT_EQ(row_max[i], float(max)) << "m=" << m << " n=" << n << " k=" << k << " row " << i;
        }
        // Without row maxima: the same scores.
        std::vector<float> s2(m * lds, kSentinel);
        tide::kernels::gemm_row_max_f32_avx512(m, n, k, q.data(), ldq, kt.data(), ldk, s2.data(), lds, nullptr);
        ASSERT_EQ(s2, s);
      }
}

TEST(GemmAvx512, ExpRowMatchesStdExpAndSums) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512F (or DNNL_MAX_CPU_ISA caps it)";
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> scores(-30.0f, 5.0f);
  for (int64_t n : {1, 13, 16, 17, 31, 32, 33, 77, 1000, 4096}) {
    std::vector<float> x(n + 3, kSentinel);
    for (int64_t i = 0; i < n; ++i) x[i] = scores(gen);
    x[n / 2] = -200.0f;  // below exp's clamp: a tiny normal float, never a denormal
    float max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
    const std::vector<float> before = x;
    const float sum = tide::kernels::exp_row_avx512(x.data(), n, max);
    double want_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(double(before[i] - max));  // the difference rounded to float, as the kernel has it
      want_sum += want;
      if (before[i] - max > -80.0f) ASSERT_NEAR(x[i], want, 3e-7 * want + 1e-30) << "n=" << n << " i=" << i;
      else ASSERT_LT(x[i], 1e-34f);
      ASSERT_GE(x[i], std::numeric_limits<float>::min()) << "a denormal or zero at n=" << n << " i=" << i;
    }
    EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum) << "n=" << n;
    for (int64_t i = n; i < n + 3; ++i) ASSERT_EQ(x[i], kSentinel) << "wrote past the row";
  }
}

TEST(GemmAvx512, ProductMatchesFloat64) {
  if (!gemm_avx512_available()) GTEST_SKIP() << "this CPU has no AVX-512F (or DNNL_MAX_CPU_ISA caps it)";
  std::mt19937 gen(5);
  for (int64_t m : {1, 3, 8, 12, 13, 25})
    // Head dimensions (SD: 40, 64, 80, 160), Winograd's 32-column panels, and odd widths.
    for (int64_t n : {1, 8, 17, 32, 40, 48, 64, 80, 100, 160})
      for (int64_t k : {1, 77, 80, 256})
        for (bool accumulate : {false, true}) {
          const int64_t ldp = k + 1, ldv = n + 4, ldo = n + 3;
          const auto p = random_floats(m * ldp, gen), v = random_floats(k * ldv, gen);
          std::vector<float> out(m * ldo, kSentinel);
          std::vector<double> start(m * n, 0.0);
          if (accumulate)
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) start[i * n + j] = out[i * ldo + j] = float(i - j) * 0.25f;
          tide::kernels::gemm_f32_avx512(m, n, k, p.data(), ldp, v.data(), ldv, out.data(), ldo, accumulate);
          const auto want = product64(m, n, k, p.data(), ldp, v.data(), ldv);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j)
              ASSERT_NEAR(out[i * ldo + j], start[i * n + j] + want[i * n + j], 1e-4 * (1 + std::sqrt(double(k))))
                  << "m=" << m << " n=" << n << " k=" << k << " accumulate=" << accumulate << " at " << i << "," << j;
            for (int64_t j = n; j < ldo; ++j) ASSERT_EQ(out[i * ldo + j], kSentinel) << "wrote past the row";
          }
        }
}

}  // namespace
