// tide's single-threaded float32 GEMM tiles (kernels/gemm_cpu.h) against at::mm in float64 on random inputs:
// every row count up to two register tiles and a tail (each tile height), column counts that take every panel
// width and the scalar remainder, plain, transposed and indirect A, scattered C, with and without accumulation,
// on the AVX2 tiles (2 × 40 or 4 × 24 first) and (where the CPU has them) the AVX-512VL ones.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <vector>

#include "test_support.h"
#include "tide/kernels/gemm_cpu.h"

namespace {

TEST(GemmCpu, MatchesMatmulOnRandomShapes) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the kernels are not used";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (const int64_t n : {1, 8, 16, 24, 32, 40, 45, 83, 88}) {
    for (int64_t m = 1; m <= 14; ++m) {
      const int64_t k = 37;
      const at::Tensor a = at::randn({m, k}, gen), b = at::randn({k, n}, gen), c0 = at::randn({m, n}, gen);
      const at::Tensor product = at::mm(a.to(at::kDouble), b.to(at::kDouble));
      // Indirect A: rows in reverse order inside a wider buffer, read from column 3 on.
      const at::Tensor wide = at::randn({m, k + 5}, gen);
      wide.narrow(1, 3, k).copy_(a);
      std::vector<const float*> rows(m);
      for (int64_t i = 0; i < m; ++i) rows[i] = wide[i].data_ptr<float>();
      const at::Tensor reversed_rows = a.flip(0);
      std::vector<const float*> flipped(m);
      for (int64_t i = 0; i < m; ++i) flipped[i] = wide[m - 1 - i].data_ptr<float>();
      const at::Tensor at_t = a.t().contiguous();  // Aᵀ [k, m]
      for (const bool accumulate : {false, true}) {
        for (const bool avx512 : {false, true}) {
          const at::Tensor expected = accumulate ? product + c0.to(at::kDouble) : product;
          const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                   (accumulate ? " accumulate" : "") + (avx512 ? " avx512 allowed" : "");
          at::Tensor c = c0.clone();
          tide::kernels::gemm_f32(m, n, k, a.data_ptr<float>(), k, b.data_ptr<float>(), n, c.data_ptr<float>(), n,
                                  accumulate, avx512);
          EXPECT_LT(tide::testing::max_abs_diff(c, expected), 1e-4) << what;
          c = c0.clone();
          tide::kernels::gemm_f32(m, n, k, at_t.data_ptr<float>(), m, b.data_ptr<float>(), n, c.data_ptr<float>(), n,
                                  accumulate, avx512, /*transpose_a=*/true);
          EXPECT_LT(tide::testing::max_abs_diff(c, expected), 1e-4) << what << " transposed A";
          for (const bool transpose_a : {false, true}) {  // 4 × 24 register tiles first
            c = c0.clone();
            tide::kernels::gemm_f32(m, n, k, transpose_a ? at_t.data_ptr<float>() : a.data_ptr<float>(),
                                    transpose_a ? m : k, b.data_ptr<float>(), n, c.data_ptr<float>(), n, accumulate,
                                    avx512, transpose_a, /*tall_tiles=*/true);
            EXPECT_LT(tide::testing::max_abs_diff(c, expected), 1e-4) << what << " tall tiles" << (transpose_a ? ", Aᵀ" : "");
          }
          c = c0.clone();
          tide::kernels::gemm_f32_rows(m, n, k, rows.data(), 3, b.data_ptr<float>(), n, c.data_ptr<float>(), n,
                                       accumulate, avx512);
          EXPECT_LT(tide::testing::max_abs_diff(c, expected), 1e-4) << what << " indirect A";
          // The rows given in another order give the product's rows in that order.
          const at::Tensor c_flipped = accumulate ? c0.flip(0).contiguous() : at::zeros({m, n});
          tide::kernels::gemm_f32_rows(m, n, k, flipped.data(), 3, b.data_ptr<float>(), n, c_flipped.data_ptr<float>(),
                                       n, accumulate, avx512);
          const at::Tensor expected_flipped = at::mm(reversed_rows.to(at::kDouble), b.to(at::kDouble)) +
                                              (accumulate ? c0.flip(0).to(at::kDouble) : at::zeros({m, n}, at::kDouble));
          EXPECT_LT(tide::testing::max_abs_diff(c_flipped, expected_flipped), 1e-4) << what << " indirect A, reversed";
          // Scattered C: row i of the product into row 2·(m − 1 − i) of a C twice as tall; the odd rows untouched.
          std::vector<int64_t> c_rows(m);
          for (int64_t i = 0; i < m; ++i) c_rows[i] = 2 * (m - 1 - i);
          const at::Tensor tall0 = at::randn({2 * m, n}, gen);
          at::Tensor tall = tall0.clone();
          tide::kernels::gemm_f32_rows(m, n, k, rows.data(), 3, b.data_ptr<float>(), n, tall.data_ptr<float>(), n,
                                       accumulate, avx512, c_rows.data());
          const at::Tensor even = tall.view({m, 2, n}).select(1, 0).flip(0), odd = tall.view({m, 2, n}).select(1, 1);
          const at::Tensor expected_even =
              product + (accumulate ? tall0.view({m, 2, n}).select(1, 0).flip(0).to(at::kDouble) : at::zeros_like(product));
          EXPECT_LT(tide::testing::max_abs_diff(even, expected_even), 1e-4) << what << " scattered C";
          EXPECT_TRUE(at::equal(odd, tall0.view({m, 2, n}).select(1, 1))) << what << " rows of C not listed";
        }
      }
    }
  }
}

// The scores' product: C = A·B and each row's maximum taken with the values still in registers, for every column
// count from one to past two 16-column panels (the last n % 8 columns through a masked vector), in the AVX2 tiles
// and, where the CPU has them, the 512-bit ones; the columns of C past n (another row's, in attention's strip)
// left untouched, a row maximum above the row's values kept.
TEST(GemmCpu, RowMaxProductOnRandomShapes) {
  if (!tide::kernels::gemm_f32_available()) GTEST_SKIP() << "this CPU has no AVX2/FMA: the kernels are not used";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  for (const int64_t m : {1, 5, 6, 13}) {
    for (int64_t n = 1; n <= 40; n += (n < 18 ? 1 : 7)) {
      for (const int64_t k : {1, 40}) {
        const at::Tensor a = at::randn({m, k}, gen), b = at::randn({k, n}, gen);
        const at::Tensor product = at::mm(a.to(at::kDouble), b.to(at::kDouble));
        const int64_t ldc = n + 3;
        const at::Tensor c0 = at::randn({m, ldc}, gen);
        for (const bool avx512 : {false, true}) {
          at::Tensor c = c0.clone();
          std::vector<float> row_max(m, -std::numeric_limits<float>::infinity());
          row_max[0] = 1e6f;  // already above every value of row 0
          tide::kernels::gemm_row_max_f32(m, n, k, a.data_ptr<float>(), k, b.data_ptr<float>(), n, c.data_ptr<float>(), ldc,
                                          row_max.data(), avx512);
          const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                   (avx512 ? " avx512 allowed" : "");
          EXPECT_LT(tide::testing::max_abs_diff(c.narrow(1, 0, n), product), 1e-4) << what;
          EXPECT_TRUE(at::equal(c.narrow(1, n, 3), c0.narrow(1, n, 3))) << what << ": columns past n written";
          EXPECT_EQ(row_max[0], 1e6f) << what;
          for (int64_t i = 1; i < m; ++i)
            EXPECT_EQ(row_max[i], c[i].narrow(0, 0, n).max().item<float>()) << what << " row " << i;
        }
      }
    }
  }
}

}  // namespace
