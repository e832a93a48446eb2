// Matrix products with float16 multiplies, for CPUs with AVX512-FP16 (Sapphire Rapids and later): 32
// lanes per FMA, twice float32's. On 2 vCPUs of an AVX512-VNNI Xeon: float16 FMAs 190 GMAC/s per core against
// float32's 87; AVX512-BF16's dot product only 43 there, so bf16 is no way to halve this work. Used by the int8
// UNet (its quantization error is far larger than float16's rounding) for attention's two products, where the
// values are bounded so that no float16 sum can overflow (attention_half_products_fit()).
//
// Layout: each FMA multiplies 16 pairs. The broadcast operand is a pair of neighbours along the summed dimension
// (one 32-bit load: a 16-bit broadcast would cost a shuffle on an FMA port, and an FMA's own {1to32} operand ran at
// half speed there); the streamed operand is packed as pairs, B2[p][j] = (B[2p][j], B[2p+1][j]); each output is
// the sum of its lane pair. Sums run in float16 over at most kHalfSumLength terms, then in float32.
// One thread; row-major matrices with unit stride along rows; float16 values as their bit patterns.
#pragma once
#include <cstdint>

namespace tide::kernels {

// Terms summed in float16 before a partial sum joins a float32 one (both products).
constexpr int64_t kHalfSumLength = 64;
// The widest head the float16 products take (SD 1.5's deepest level has 160).
constexpr int64_t kHalfHeadDimMax = 256;

// True on x86 CPUs with AVX512-FP16 (and AVX-512F/BW/VL, AVX2, FMA) where DNNL_MAX_CPU_ISA allows AVX-512, and a
// compiler that has its intrinsics.
bool attention_half_products_available();

// True when neither product's float16 sums can overflow: head dimension d ≤ kHalfHeadDimMax,
// min(d, kHalfSumLength) · max|q| · max|k| ≤ 2^15 (scores; q and k as they enter the product) and
// kHalfSumLength · max|v| ≤ 2^15 (probs·v, whose probabilities are at most 1). NaN maxima give false.
bool attention_half_products_fit(int64_t d, float max_abs_q, float max_abs_k, float max_abs_v);

// Scores: C[m, n] = A[m, k] · B[k, n] in float32 and row_max[i] = max(row_max[i], max_j C[i, j]). A: q rows in
// float16, k even (an odd head dimension padded with a zero column), k ≤ kHalfHeadDimMax. B as pairs (kᵀ):
// b[p · ldb + 2j + e] = B[2p + e][j], ldb ≥ 2n. Float16 sums over chunks of kHalfSumLength terms, added in float32.
void scores_half(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                 float* c, int64_t ldc, float* row_max);

// C[m, n] = A[m, k] · B[k, n] in float32 (C += with `accumulate`): attention's probs·v. A in
// float16, k even (an odd count padded with zeros: A's column k−1 and B's row k−1). B as pairs:
// b[p · ldb + 2j + e] = B[2p + e][j], ldb ≥ 2n. Float16 sums over chunks of kHalfSumLength terms, added into
// float32; |A| · |B| summed over a chunk must stay below 65504.
void gemm_half(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
               float* c, int64_t ldc, bool accumulate);

// Float16 copies of one head's rows x [n, d] (row stride ld, d ≤ kHalfHeadDimMax) in the layouts above, rounded to nearest
// even as at::Half rounds; each returns the largest |x| it read (NaN if any x is NaN), for
// attention_half_products_fit. Rows: out[j · d + c] = x[j, c] (q). Pairs of columns: out[p · 2n + 2j + e] =
// x[j, 2p + e], d even (kᵀ). Pairs of rows: out[p · 2d + 2c + e] = x[2p + e, c], for 2p + e < n, an odd n's last
// pair completed with zeros (v).
float pack_half_rows(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out);
float pack_half_column_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out);
float pack_half_row_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out);

}  // namespace tide::kernels
