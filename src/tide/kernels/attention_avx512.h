// The three steps of blocked attention's strip (scores, exp, probs·v) in 512-bit vectors, for CPUs with
// AVX-512F. The AVX2 kernels (gemm_cpu.h) use 256-bit vectors, half of what these CPUs' FMA units take:
// on 2 vCPUs of an AVX512-VNNI Xeon attention ran at 106 GFLOP/s there, a third of the 338 GFLOP/s peak,
// and was half of an int8 UNet call at 512 px. One thread, row-major matrices with unit stride along rows.
#pragma once
#include <cstdint>

namespace tide::kernels {

// True on x86 CPUs with AVX-512F (and AVX2/FMA) where DNNL_MAX_CPU_ISA allows AVX-512.
bool attention_avx512_available();

// scores[m, n] = q[m, k] · kt[k, n]; row_max[i] = max(row_max[i], max_j scores[i, j]) (`row_max` may be null).
void attention_scores_avx512(int64_t m, int64_t n, int64_t k, const float* q, int64_t ldq, const float* kt,
                             int64_t ldk, float* scores, int64_t lds, float* row_max);

// x[i] <- exp(x[i] − max) over one row whose max is known; returns the row's sum.
float attention_exp_row_avx512(float* x, int64_t n, float max);

// out[m, n] = p[m, k] · v[k, n], or out += p · v with `accumulate` (n = the head dimension).
void attention_probs_v_avx512(int64_t m, int64_t n, int64_t k, const float* p, int64_t ldp, const float* v,
                              int64_t ldv, float* out, int64_t ldo, bool accumulate);

}  // namespace tide::kernels
