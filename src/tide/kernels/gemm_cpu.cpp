#include "tide/kernels/gemm_cpu.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "tide/kernels/gemm_avx512.h"
#include "tide/runtime/cpu_features.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TIDE_X86 1
#endif

namespace tide::kernels {
namespace {

#ifdef TIDE_X86
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
const bool kHasAvx512vl = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                          runtime::max_isa_allows_avx512();

// Where the rows of A are: A[m, k] row-major; with TransA stored as Aᵀ [k, m] (element (i, p) at
// a[p·lda + i]; the backward's Pᵀ·dO and dSᵀ·q read the strips that way, without a transposed copy); or,
// with Indirect, anywhere: row i starts at rows[i] + offset (a convolution's input pixels for one tap).
template <bool TransA, bool Indirect = false>
struct ARows {
  const float* a;
  int64_t lda;
  const float* const* rows = nullptr;  // Indirect only
  int64_t offset = 0;                  // Indirect only
  // Element (i, p) of A.
  const float* at(int64_t i, int64_t p) const {
    if constexpr (Indirect) return rows[i] + offset + p;
    else return TransA ? a + p * lda + i : a + i * lda + p;
  }
  // The rows from row i on.
  ARows from_row(int64_t i) const {
    if constexpr (Indirect) return {a, lda, rows + i, offset};
    else return {at(i, 0), lda, rows, offset};
  }
};

// Where the rows of C are: row i at c + i·ldc, or with Scattered at c + index[i]·ldc (a convolution's output
// pixels that one kernel tap reaches, the others left out).
template <bool Scattered = false>
struct CRows {
  float* c;
  int64_t ldc;
  const int64_t* index = nullptr;  // Scattered only
  float* row(int64_t i) const { return c + (Scattered ? index[i] : i) * ldc; }
  CRows from_row(int64_t i) const {
    if constexpr (Scattered) return {c, ldc, index + i};
    else return {c + i * ldc, ldc};
  }
  CRows from_column(int64_t j) const { return {c + j, ldc, index}; }
};

// The largest of a vector's 8 floats.
__attribute__((target("avx2"), always_inline)) inline float horizontal_max(__m256 m) {
  m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0x4e));
  m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0xb1));
  return _mm256_cvtss_f32(m);
}

// C[R rows, 8·NV cols] (+)= A[rows i.., k] · B[k, 8·NV cols]: R·NV accumulators in registers, B streamed row
// by row. With `row_max`, also row_max[r] = max(row_max[r], max of the row's new values) (the scores' row max
// for the softmax, taken while they are still in registers).
template <int R, int NV, bool Accumulate, class A, class C>
__attribute__((target("avx2,fma"), always_inline)) inline void micro_gemm(int64_t k, const A& a, int64_t i, const float* b,
                                                           int64_t ldb, const C& c, float* row_max) {
  float* c_r[R];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) c_r[r] = c.row(r);
  __m256 acc[R][NV];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = Accumulate ? _mm256_loadu_ps(c_r[r] + 8 * v) : _mm256_setzero_ps();
  const float* a_r[R];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) a_r[r] = a.at(i + r, 0);
  const int64_t a_step = a.at(i, 1) - a_r[0];  // along k: 1, or lda for Aᵀ
  for (int64_t p = 0; p < k; ++p) {
    __m256 bv[NV];
    #pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + p * ldb + 8 * v);
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a_r[r] + p * a_step);
      #pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    #pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c_r[r] + 8 * v, acc[r][v]);
    if (row_max) {
      __m256 m = acc[r][0];
      #pragma GCC unroll 8
      for (int v = 1; v < NV; ++v) m = _mm256_max_ps(m, acc[r][v]);
      row_max[r] = std::max(row_max[r], horizontal_max(m));
    }
  }
}

// All m rows of one column panel of 8·NV columns: R rows at a time, then the fewer than R remaining rows in
// one tile as tall as they are (single-row tiles have too few accumulators to hide the FMA latency).
template <int R, int NV, bool Accumulate, class A, class C>
__attribute__((target("avx2,fma"))) void panel(int64_t m, int64_t k, const A& a, const float* b, int64_t ldb, const C& c,
                                               float* row_max) {
  int64_t i = 0;
  for (; i + R <= m; i += R)
    micro_gemm<R, NV, Accumulate>(k, a, i, b, ldb, c.from_row(i), row_max ? row_max + i : nullptr);
  if constexpr (R > 1)
    if (m > i) panel<R - 1, NV, Accumulate>(m - i, k, a.from_row(i), b, ldb, c.from_row(i), row_max ? row_max + i : nullptr);
}

// The last fewer than 8 columns (`width`): one vector per row whose lanes past them are masked off, B and C
// read and written through the mask (the columns past C's are another row's, or past its end). Scalar code
// here took more time than the vector panels beside it (attention's scores over 77 text tokens: 4 × 16 + 13).
template <int R, bool Accumulate, class A, class C>
__attribute__((target("avx2,fma"), always_inline)) inline void masked_tile(int64_t k, const A& a, int64_t i,
                                                                            const float* b, int64_t ldb, const C& c,
                                                                            float* row_max, __m256i mask) {
  float* c_r[R];
  const float* a_r[R];
  __m256 acc[R];
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    c_r[r] = c.row(r);
    a_r[r] = a.at(i + r, 0);
    acc[r] = Accumulate ? _mm256_maskload_ps(c_r[r], mask) : _mm256_setzero_ps();
  }
  const int64_t a_step = a.at(i, 1) - a_r[0];  // along k: 1, or lda for Aᵀ
  for (int64_t p = 0; p < k; ++p) {
    const __m256 bv = _mm256_maskload_ps(b + p * ldb, mask);
    #pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(a_r[r] + p * a_step), bv, acc[r]);
  }
  const __m256 minus_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  #pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm256_maskstore_ps(c_r[r], mask, acc[r]);
    if (row_max)
      row_max[r] = std::max(row_max[r], horizontal_max(_mm256_blendv_ps(minus_inf, acc[r], _mm256_castsi256_ps(mask))));
  }
}

template <int R, bool Accumulate, class A, class C>
__attribute__((target("avx2,fma"))) void masked_panel(int64_t m, int64_t k, const A& a, const float* b, int64_t ldb,
                                                      const C& c, float* row_max, int width) {
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(width), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int64_t i = 0;
  for (; i + R <= m; i += R)
    masked_tile<R, Accumulate>(k, a, i, b, ldb, c.from_row(i), row_max ? row_max + i : nullptr, mask);
  if constexpr (R > 1)
    if (m > i)
      masked_panel<R - 1, Accumulate>(m - i, k, a.from_row(i), b, ldb, c.from_row(i), row_max ? row_max + i : nullptr,
                                      width);
}

// Row-major C[m, n] (+)= A[m, k] · B[k, n] (unit stride along rows), one thread, no allocation: BLAS called
// from many threads at once contends on its internal buffers, badly on a busy machine. Column panels of
// up to 40 columns with register tiles of at most 12 accumulators (16 ymm registers in all); with
// `tall_tiles`, 4 × 24 tiles before 2 × 40 ones.
template <bool Accumulate, class A, class C>
__attribute__((target("avx2,fma"))) void gemm_avx2(int64_t m, int64_t n, int64_t k, const A& a, const float* b,
                                                   int64_t ldb, const C& c, float* row_max = nullptr,
                                                   bool tall_tiles = false) {
  int64_t j = 0;
  if (tall_tiles)
    for (; n - j >= 24; j += 24) panel<4, 3, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
  for (; n - j >= 40; j += 40) panel<2, 5, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
  if (n - j >= 32) {
    panel<3, 4, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
    j += 32;
  } else if (n - j >= 24) {
    panel<4, 3, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
    j += 24;
  }
  for (; n - j >= 16; j += 16) panel<6, 2, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
  for (; n - j >= 8; j += 8) panel<6, 1, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max);
  if (j < n) masked_panel<6, Accumulate>(m, k, a, b + j, ldb, c.from_column(j), row_max, int(n - j));
}

// Scores [m, n] = A[m, k] · Bᵀ-panel B[k, n] in 16-column panels (B = kᵀ, dense), the row maxima on the fly.
__attribute__((target("avx2,fma"))) void scores_avx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                                                     const float* b, int64_t ldb, float* c, int64_t ldc,
                                                     float* row_max) {
  const ARows<false> rows{a, lda};
  const CRows<> out{c, ldc};
  int64_t j = 0;
  for (; n - j >= 16; j += 16) panel<6, 2, false>(m, k, rows, b + j, ldb, out.from_column(j), row_max);
  if (n > j) gemm_avx2<false>(m, n - j, k, rows, b + j, ldb, out.from_column(j), row_max);
}

// probs·v on CPUs with AVX-512VL: micro_gemm is inlined here and compiled for that target, so it has 32
// vector registers and takes 4 rows × 40 columns per register tile (20 accumulators, twice the AVX2
// tile's): each loaded row of v feeds twice the FMAs. Columns left over go to the AVX2 version. (A
// 12 × 16 tile for the scores was measured slower than the AVX2 6 × 16 one: 0.46 vs 0.39 s at 4096
// tokens, so the scores keep it.)
#define TIDE_VL_TARGET __attribute__((target("avx2,fma,avx512f,avx512vl")))
template <int R, int NV, bool Accumulate, class A, class C>
TIDE_VL_TARGET void panel_vl(int64_t m, int64_t k, const A& a, const float* b, int64_t ldb, const C& c) {
  int64_t i = 0;
  for (; i + R <= m; i += R) micro_gemm<R, NV, Accumulate>(k, a, i, b, ldb, c.from_row(i), nullptr);
  if (m - i >= R / 2) {  // a half tile before single rows
    micro_gemm<R / 2, NV, Accumulate>(k, a, i, b, ldb, c.from_row(i), nullptr);
    i += R / 2;
  }
  for (; i < m; ++i) micro_gemm<1, NV, Accumulate>(k, a, i, b, ldb, c.from_row(i), nullptr);
}

template <bool Accumulate, class A, class C>
TIDE_VL_TARGET void gemm_vl(int64_t m, int64_t n, int64_t k, const A& a, const float* b, int64_t ldb, const C& c) {
  int64_t j = 0;
  for (; n - j >= 40; j += 40) panel_vl<4, 5, Accumulate>(m, k, a, b + j, ldb, c.from_column(j));
  if (n > j) gemm_avx2<Accumulate>(m, n - j, k, a, b + j, ldb, c.from_column(j));
}

template <class A, class C>
void gemm_any(int64_t m, int64_t n, int64_t k, const A& a, const float* b, int64_t ldb, const C& c, bool accumulate,
              bool wide, bool tall_tiles = false) {
  if (wide)
    accumulate ? gemm_vl<true>(m, n, k, a, b, ldb, c) : gemm_vl<false>(m, n, k, a, b, ldb, c);
  else if (accumulate)
    gemm_avx2<true>(m, n, k, a, b, ldb, c, nullptr, tall_tiles);
  else
    gemm_avx2<false>(m, n, k, a, b, ldb, c, nullptr, tall_tiles);
}

#undef TIDE_VL_TARGET

#endif

[[noreturn]] void unavailable() { throw std::logic_error("gemm_f32: needs a CPU with AVX2 and FMA"); }

}  // namespace

bool gemm_f32_available() {
#ifdef TIDE_X86
  return kHasAvx2;
#else
  return false;
#endif
}

void gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
              int64_t ldc, bool accumulate, bool allow_avx512, bool transpose_a, bool tall_tiles) {
#ifdef TIDE_X86
  if (!kHasAvx2) unavailable();
  const bool wide = allow_avx512 && kHasAvx512vl;
  // 512-bit tiles (kernels/gemm_avx512.h): Winograd's F(4×4) convolutions 1.3–1.4× faster with them.
  if (wide && !transpose_a && gemm_avx512_available()) return gemm_f32_avx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
  if (transpose_a)
    gemm_any(m, n, k, ARows<true>{a, lda}, b, ldb, CRows<>{c, ldc}, accumulate, wide, tall_tiles);
  else
    gemm_any(m, n, k, ARows<false>{a, lda}, b, ldb, CRows<>{c, ldc}, accumulate, wide, tall_tiles);
#else
  unavailable();
#endif
}

void gemm_f32_rows(int64_t m, int64_t n, int64_t k, const float* const* a_rows, int64_t a_offset, const float* b,
                   int64_t ldb, float* c, int64_t ldc, bool accumulate, bool allow_avx512, const int64_t* c_rows) {
#ifdef TIDE_X86
  if (!kHasAvx2) unavailable();
  const ARows<false, true> a{nullptr, 0, a_rows, a_offset};
  const bool wide = allow_avx512 && kHasAvx512vl;
  if (c_rows) gemm_any(m, n, k, a, b, ldb, CRows<true>{c, ldc, c_rows}, accumulate, wide);
  else gemm_any(m, n, k, a, b, ldb, CRows<>{c, ldc}, accumulate, wide);
#else
  unavailable();
#endif
}

void gemm_row_max_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float* c, int64_t ldc, float* row_max, bool allow_avx512) {
#ifdef TIDE_X86
  if (!kHasAvx2) unavailable();
  if (allow_avx512 && gemm_avx512_available()) return gemm_row_max_f32_avx512(m, n, k, a, lda, b, ldb, c, ldc, row_max);
  scores_avx2(m, n, k, a, lda, b, ldb, c, ldc, row_max);
#else
  unavailable();
#endif
}

}  // namespace tide::kernels
