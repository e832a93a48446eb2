// Single-threaded float32 matrix products for kernels that run them from their own worker threads
// (blocked attention, Winograd convolution): BLAS called from many threads at once contends on its
// internal buffers and thread pool, badly on a busy machine. Register-blocked AVX2/FMA tiles, a taller
// tile where AVX-512VL gives 32 vector registers, and 512-bit tiles (gemm_avx512.h) where the CPU has AVX-512F. All matrices are row-major with unit stride along rows.
#pragma once
#include <cstdint>

namespace tide::kernels {

// True on x86 CPUs with AVX2 and FMA, where the functions below may be called.
bool gemm_f32_available();

// C[m, n] = A[m, k] · B[k, n], or C += A · B with `accumulate`. `allow_avx512`: where the CPU has AVX-512, the
// 512-bit tiles of gemm_avx512.h (Aᵀ: the AVX-512VL tile); false: only the AVX2 tiles, e.g. to test both. `transpose_a`: A is stored as
// Aᵀ [k, m] (element (i, p) at a[p·lda + i]), read that way without a transposed copy. `tall_tiles`: AVX2
// register tiles of 4 rows × 24 columns before 2 × 40 ones, each loaded row of B then feeding 4 rows of A
// (attention's products with the head dimension as columns, 40 in SD 1.5: forward and backward 1.1× faster;
// Winograd's products measured up to 1.1× slower with them).
void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
              int64_t ldc, bool accumulate, bool allow_avx512 = true, bool transpose_a = false,
              bool tall_tiles = false);

// gemm_f32 with the rows of A anywhere: row i is the k floats from a_rows[i] + a_offset (an indirection
// table; a convolution's input pixels for one kernel tap, a shared zero row where the tap falls in the padding).
// With `c_rows`, row i of C is at c + c_rows[i]·ldc (the output pixels a tap reaches, the padding left out).
void gemm_f32_rows(int64_t m, int64_t n, int64_t k, const float* const* a_rows, int64_t a_offset, const float* b,
                   int64_t ldb, float* c, int64_t ldc, bool accumulate, bool allow_avx512 = true,
                   const int64_t* c_rows = nullptr);

// C = A · B and, for each row i, row_max[i] = max(row_max[i], max_j C[i, j]), taken while the values are
// still in registers (attention scores before their softmax); `row_max` may be null. `allow_avx512` as in gemm_f32.
void gemm_row_max_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, float* row_max, bool allow_avx512 = true);

}  // namespace tide::kernels
