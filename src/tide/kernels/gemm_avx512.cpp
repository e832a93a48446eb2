#include "tide/kernels/gemm_avx512.h"

#include <algorithm>
#include <stdexcept>

#include "tide/runtime/cpu_features.h"

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_ps(), which it then reports as (maybe) uninitialized
// (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define TIDE_X86 1
#include "tide/kernels/exp_avx2.h"  // the exp polynomial's constants
#endif

namespace tide::kernels {
namespace {

#ifdef TIDE_X86
#define TIDE_AVX512 __attribute__((target("avx512f,avx2,fma")))

const bool kHasAvx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                        __builtin_cpu_supports("fma") && runtime::max_isa_allows_avx512();

// The lanes of a panel's last vector that hold columns (`width` of them, 1 to 16).
inline __mmask16 lanes(int64_t width) { return width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1); }

// 16 floats from p; with Masked only the `last` lanes (the others 0, nothing read past them).
template <bool Masked>
TIDE_AVX512 __attribute__((always_inline)) inline __m512 load16(const float* p, __mmask16 last) {
  if constexpr (Masked) return _mm512_maskz_loadu_ps(last, p);
  else return _mm512_loadu_ps(p);
}

// C[R rows, 16·NV columns] (+)= A[R, k] · B[k, 16·NV]: R·NV accumulators in registers, B streamed row by row;
// with Masked the last vector holds only the `last` lanes. With `row_max` (vectors, one per row) the rows'
// new values are folded into it while they are still in registers (the scores' maxima for the softmax).
template <int R, int NV, bool Masked, bool Accumulate>
TIDE_AVX512 __attribute__((always_inline)) inline void tile(int64_t k, const float* a, int64_t lda, const float* b,
                                                            int64_t ldb, float* c, int64_t ldc, __mmask16 last,
                                                            __m512* row_max) {
  __m512 acc[R][NV];
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = !Accumulate               ? _mm512_setzero_ps()
                  : (Masked && v == NV - 1) ? load16<true>(c + r * ldc + 16 * v, last)
                                            : load16<false>(c + r * ldc + 16 * v, last);
  for (int64_t p = 0; p < k; ++p) {
    __m512 bv[NV];
    #pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = (Masked && v == NV - 1) ? load16<true>(b + p * ldb + 16 * v, last) : load16<false>(b + p * ldb + 16 * v, last);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    #pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (Masked && v == NV - 1) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, last, acc[r][v]);
      else _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
    }
    if (row_max) {
      __m512 m = row_max[r];
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        m = _mm512_mask_max_ps(m, (Masked && v == NV - 1) ? last : __mmask16(0xFFFF), m, acc[r][v]);
      row_max[r] = m;
    }
  }
}

// All m rows of one column panel: R rows at a time, then a tile of R/2 rows, then single rows.
template <int R, int NV, bool Masked, bool Accumulate>
TIDE_AVX512 void panel(int64_t m, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                       int64_t ldc, __mmask16 last, __m512* row_max) {
  auto at_row = [row_max](int64_t i) { return row_max ? row_max + i : nullptr; };
  int64_t i = 0;
  for (; i + R <= m; i += R)
    tile<R, NV, Masked, Accumulate>(k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, last, at_row(i));
  if constexpr (R > 1)
    if (m - i >= R / 2) {
      tile<R / 2, NV, Masked, Accumulate>(k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, last, at_row(i));
      i += R / 2;
    }
  for (; i < m; ++i) tile<1, NV, Masked, Accumulate>(k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, last, at_row(i));
}

// One panel of NV vectors, the last one full or masked; R·NV ≤ 24 accumulators of the 32 registers.
template <int R, int NV, bool Accumulate>
TIDE_AVX512 void panel_of_width(int64_t width, int64_t m, int64_t k, const float* a, int64_t lda, const float* b,
                                int64_t ldb, float* c, int64_t ldc, __m512* row_max) {
  if (width % 16 == 0) panel<R, NV, false, Accumulate>(m, k, a, lda, b, ldb, c, ldc, 0xFFFF, row_max);
  else panel<R, NV, true, Accumulate>(m, k, a, lda, b, ldb, c, ldc, lanes(width % 16), row_max);
}

// C[m, n] (+)= A[m, k] · B[k, n] in column panels of up to 16·kWidest columns. The scores take panels of 48
// (8 × 48 tiles: 116 GFLOP/s on one core at 4096 tokens, against 110 for 6 × 64 and 93 for 12 × 32, whose 12
// broadcasts per 24 FMAs crowd the load ports), other products up to 64 (a head dimension of 40 is one masked
// panel of 48). Winograd's 32-column panels run 8 × 32 tiles: 1.0–1.1× faster than 12 × 32 ones there.
template <int kWidest, bool Accumulate>
TIDE_AVX512 void gemm512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float* c, int64_t ldc, __m512* row_max) {
  for (int64_t j = 0; j < n;) {
    const int64_t width = std::min<int64_t>(n - j, 16 * kWidest);
    switch ((width + 15) / 16) {
      case 4: panel_of_width<6, 4, Accumulate>(width, m, k, a, lda, b + j, ldb, c + j, ldc, row_max); break;
      case 3: panel_of_width<8, 3, Accumulate>(width, m, k, a, lda, b + j, ldb, c + j, ldc, row_max); break;
      case 2: panel_of_width<8, 2, Accumulate>(width, m, k, a, lda, b + j, ldb, c + j, ldc, row_max); break;
      default: panel_of_width<12, 1, Accumulate>(width, m, k, a, lda, b + j, ldb, c + j, ldc, row_max); break;
    }
    j += width;
  }
}

// exp for x ≤ 0 as kernels/exp_avx2.h computes it (its constants), 16 lanes; the power of two by vscalefps.
TIDE_AVX512 inline __m512 exp_nonpositive16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
  const __m512 fx = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(kLog2e), _mm512_set1_ps(0.5f)),
                                         _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kLn2High), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(kLn2Low), x);
  __m512 y = _mm512_set1_ps(kExpPolynomial[0]);
  for (int i = 1; i < 6; ++i) y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(kExpPolynomial[i]));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, fx);
}

TIDE_AVX512 void row_max_product(int64_t m, int64_t n, int64_t k, const float* q, int64_t ldq, const float* kt, int64_t ldk,
                        float* out, int64_t lds, float* row_max) {
  if (!row_max) return gemm512<3, false>(m, n, k, q, ldq, kt, ldk, out, lds, nullptr);
  constexpr int64_t kRows = 256;  // row maxima kept as vectors for this many rows at a time (16 KiB)
  __m512 max_vectors[kRows];
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const int64_t rows = std::min(kRows, m - i0);
    for (int64_t r = 0; r < rows; ++r) max_vectors[r] = _mm512_set1_ps(row_max[i0 + r]);
    gemm512<3, false>(rows, n, k, q + i0 * ldq, ldq, kt, ldk, out + i0 * lds, lds, max_vectors);
    for (int64_t r = 0; r < rows; ++r) row_max[i0 + r] = _mm512_reduce_max_ps(max_vectors[r]);
  }
}

// exp(x − max) 16 lanes at a time, into x itself or, with Half, into float16 bits at `half` (x untouched).
// (AVX-512F alone has no 16-bit masked store: a partial vector of halves goes through the stack.)
template <bool Half>
TIDE_AVX512 __attribute__((always_inline)) inline void put_exp(float* x, uint16_t* half, int64_t i, __mmask16 live,
                                                               __m512 e) {
  if constexpr (!Half) {
    _mm512_mask_storeu_ps(x + i, live, e);
  } else {
    const __m256i h = _mm512_cvtps_ph(e, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (live == 0xFFFF) return _mm256_storeu_si256(reinterpret_cast<__m256i*>(half + i), h);
    alignas(32) uint16_t lanes16[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes16), h);
    std::copy(lanes16, lanes16 + __builtin_popcount(live), half + i);
  }
}

// exp's argument: x − max, times the scale where the row is written as float16 (attention's unscaled scores).
template <bool Half>
TIDE_AVX512 __attribute__((always_inline)) inline __m512 exp_argument(__m512 x, __m512 max, __m512 scale) {
  if constexpr (Half) return _mm512_mul_ps(_mm512_sub_ps(x, max), scale);
  else return _mm512_sub_ps(x, max);
}

template <bool Half>
TIDE_AVX512 float exp_row(float* x, int64_t n, float max, uint16_t* half, float scale) {
  const __m512 m = _mm512_set1_ps(max), s = _mm512_set1_ps(scale);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 e0 = exp_nonpositive16(exp_argument<Half>(_mm512_loadu_ps(x + i), m, s));
    const __m512 e1 = exp_nonpositive16(exp_argument<Half>(_mm512_loadu_ps(x + i + 16), m, s));
    put_exp<Half>(x, half, i, 0xFFFF, e0);
    put_exp<Half>(x, half, i + 16, 0xFFFF, e1);
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
  }
  for (; i < n; i += 16) {  // the last 16 or fewer (77 text tokens leave 13): lanes past n read as the max, added as 0
    const __mmask16 live = lanes(n - i);
    const __m512 e = exp_nonpositive16(exp_argument<Half>(_mm512_mask_loadu_ps(m, live, x + i), m, s));
    put_exp<Half>(x, half, i, live, e);
    s0 = _mm512_mask_add_ps(s0, live, s0, e);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

TIDE_AVX512 void product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float* c, int64_t ldc, bool accumulate) {
  if (accumulate) gemm512<4, true>(m, n, k, a, lda, b, ldb, c, ldc, nullptr);
  else gemm512<4, false>(m, n, k, a, lda, b, ldb, c, ldc, nullptr);
}

#undef TIDE_AVX512
#endif

[[noreturn]] void unavailable() { throw std::logic_error("gemm_avx512: needs a CPU with AVX-512F"); }

}  // namespace

bool gemm_avx512_available() {
#ifdef TIDE_X86
  return kHasAvx512;
#else
  return false;
#endif
}

void gemm_f32_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                     float* c, int64_t ldc, bool accumulate) {
#ifdef TIDE_X86
  if (!kHasAvx512) unavailable();
  product(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#else
  unavailable();
#endif
}

void gemm_row_max_f32_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                             int64_t ldb, float* c, int64_t ldc, float* row_max) {
#ifdef TIDE_X86
  if (!kHasAvx512) unavailable();
  row_max_product(m, n, k, a, lda, b, ldb, c, ldc, row_max);
#else
  unavailable();
#endif
}

float exp_row_avx512(float* x, int64_t n, float max) {
#ifdef TIDE_X86
  if (!kHasAvx512) unavailable();
  return exp_row<false>(x, n, max, nullptr, 1.0f);
#else
  unavailable();
#endif
}

float exp_row_to_half_avx512(const float* x, int64_t n, float max, float scale, uint16_t* half) {
#ifdef TIDE_X86
  if (!kHasAvx512) unavailable();
  return exp_row<true>(const_cast<float*>(x), n, max, half, scale);  // x only read
#else
  unavailable();
#endif
}

}  // namespace tide::kernels
