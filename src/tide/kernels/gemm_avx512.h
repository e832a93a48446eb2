// Float32 kernels in 512-bit vectors for CPUs with AVX-512F: matrix products (attention's, Winograd's) and the
// softmax's exp. The AVX2 tiles of gemm_cpu.h use 256-bit vectors, half of what these CPUs' FMA units take: on 2
// vCPUs of an AVX512-VNNI Xeon attention ran at 106 GFLOP/s with them, a third of the 338 GFLOP/s peak, and the
// Winograd convolutions at 0.6× oneDNN's. One thread; row-major matrices with unit stride along rows.
#pragma once
#include <cstdint>

namespace tide::kernels {

// True on x86 CPUs with AVX-512F (and AVX2/FMA) where DNNL_MAX_CPU_ISA allows AVX-512.
bool gemm_avx512_available();

// C[m, n] = A[m, k] · B[k, n], or C += A · B with `accumulate`, in column panels of up to 64 (a head dimension of
// 40 is one masked panel of 48).
void gemm_f32_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                     float* c, int64_t ldc, bool accumulate);

// C = A · B and row_max[i] = max(row_max[i], max_j C[i, j]) (`row_max` may be null): attention's scores.
void gemm_row_max_f32_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                             int64_t ldb, float* c, int64_t ldc, float* row_max);

// x[i] <- exp(x[i] − max) over one row whose max is known; returns the row's sum (attention's softmax).
float exp_row_avx512(float* x, int64_t n, float max);
// exp((x[i] − max) · scale) written as float16 bits to half[0 .. n), x untouched (attention's probabilities from
// unscaled scores, for kernels/attention_f16.h); returns the sum of the float32 values.
float exp_row_to_half_avx512(const float* x, int64_t n, float max, float scale, uint16_t* half);

}  // namespace tide::kernels
