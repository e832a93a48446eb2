#include "tide/kernels/attention_f16.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "tide/runtime/cpu_features.h"

// AVX512-FP16 intrinsics: GCC 12 and clang 16 on. Other compilers build without these kernels (unavailable).
#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 16) || \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12))
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which it then reports as (maybe) uninitialized
// (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define TIDE_X86 1
#endif

namespace tide::kernels {
namespace {

#ifdef TIDE_X86
#define TIDE_FP16 __attribute__((target("avx512fp16,avx512bw,avx512vl,avx512f,avx2,fma")))

const bool kHasFp16 = __builtin_cpu_supports("avx512fp16") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      runtime::max_isa_allows_avx512();

// The lanes of a vector's first `width` elements.
inline __mmask32 lanes32(int64_t width) { return width >= 32 ? __mmask32(0xFFFFFFFF) : __mmask32((1u << width) - 1); }
inline __mmask16 lanes16(int64_t width) { return width >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << width) - 1); }

// 16 pairs from p; with Masked only the `last` lanes (the others 0, nothing read past them).
template <bool Masked>
TIDE_FP16 __attribute__((always_inline)) inline __m512h load_pairs(const uint16_t* p, __mmask32 last) {
  if constexpr (Masked) return _mm512_castsi512_ph(_mm512_maskz_loadu_epi16(last, p));
  else return _mm512_castsi512_ph(_mm512_loadu_si512(p));
}

// The pair at p in all 16 pairs of lanes: one 32-bit broadcast load.
TIDE_FP16 __attribute__((always_inline)) inline __m512h broadcast_pair(const uint16_t* p) {
  int32_t pair;
  __builtin_memcpy(&pair, p, sizeof pair);
  return _mm512_castsi512_ph(_mm512_set1_epi32(pair));
}

// The 16 sums of 32 lanes' pairs, in float32.
TIDE_FP16 __attribute__((always_inline)) inline __m512 pair_sums(__m512h x) {
  const __m512h odd = _mm512_castsi512_ph(_mm512_srli_epi32(_mm512_castph_si512(x), 16));
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_castph_si512(_mm512_add_ph(x, odd))));
}

template <int R, int NV>
TIDE_FP16 __attribute__((always_inline)) inline void zero(__m512h (&acc)[R][NV]) {
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    #pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ph();
}

// Accumulators acc[R][NV] += A[R rows, pairs s0 .. s1) · B2[s0 .. s1, 16·NV columns], B2 streamed pair row by
// pair row (with Masked its last vector's `last` lanes only).
template <int R, int NV, bool Masked>
TIDE_FP16 __attribute__((always_inline)) inline void multiply_add(__m512h (&acc)[R][NV], int64_t s0, int64_t s1,
                                                                  const uint16_t* a, int64_t lda, const uint16_t* b,
                                                                  int64_t ldb, __mmask32 last) {
  for (int64_t s = s0; s < s1; ++s) {
    __m512h bv[NV];
    #pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = (Masked && v == NV - 1) ? load_pairs<true>(b + s * ldb + 32 * v, last)
                                      : load_pairs<false>(b + s * ldb + 32 * v, last);
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512h av = broadcast_pair(a + r * lda + 2 * s);
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ph(av, bv[v], acc[r][v]);
    }
  }
}

// C[R rows, 16·NV columns] (+)= A · B2 (the last vector `width_last` wide when Masked): float16 sums over chunks
// of kHalfSumLength terms, each added into C in float32 (the first written, unless `accumulate`). With `row_max`
// (the scores) the rows' maxima are taken from the final sums.
template <int R, int NV, bool Masked>
TIDE_FP16 void tile(int64_t pairs, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c,
                    int64_t ldc, int64_t width_last, bool accumulate, __m512* row_max) {
  constexpr int64_t kChunk = kHalfSumLength / 2;  // pairs
  for (int64_t s0 = 0; s0 < pairs; s0 += kChunk) {
    __m512h acc[R][NV];
    zero(acc);
    multiply_add<R, NV, Masked>(acc, s0, std::min(pairs, s0 + kChunk), a, lda, b, ldb, lanes32(2 * width_last));
    const bool add = accumulate || s0 > 0, last = s0 + kChunk >= pairs;
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      #pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __mmask16 live = (Masked && v == NV - 1) ? lanes16(width_last) : __mmask16(0xFFFF);
        float* out = c + r * ldc + 16 * v;
        __m512 x = pair_sums(acc[r][v]);
        if (add) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(live, out));
        _mm512_mask_storeu_ps(out, live, x);
        if (row_max && last) row_max[r] = _mm512_mask_max_ps(row_max[r], live, row_max[r], x);
      }
  }
}

// Every row of one column panel of NV vectors: R rows at a time, then R/2, then single rows. `tile.run<R, NV,
// Masked>(i)` computes rows i .. i + R.
template <int R, int NV, bool Masked, typename Tile>
TIDE_FP16 inline void rows_of_panel(int64_t m, const Tile& tile) {
  int64_t i = 0;
  for (; i + R <= m; i += R) tile.template run<R, NV, Masked>(i);
  if constexpr (R > 1)
    if (m - i >= R / 2) {
      tile.template run<R / 2, NV, Masked>(i);
      i += R / 2;
    }
  for (; i < m; ++i) tile.template run<1, NV, Masked>(i);
}

template <int R, int NV, typename Tile>
TIDE_FP16 inline void panel(int64_t m, const Tile& tile) {
  if (tile.width_last == 16) rows_of_panel<R, NV, false>(m, tile);
  else rows_of_panel<R, NV, true>(m, tile);
}

// Column panels of up to 16·kWidest columns, `make_tile(j, width_last)` giving the tile of the panel at column j;
// single-vector panels in tiles of 12 rows.
template <int kRows, int kWidest, typename MakeTile>
TIDE_FP16 void panels(int64_t m, int64_t n, const MakeTile& make_tile) {
  for (int64_t j = 0; j < n;) {
    const int64_t width = std::min<int64_t>(n - j, 16 * kWidest);
    const int64_t vectors = (width + 15) / 16;
    const auto tile = make_tile(j, width - 16 * (vectors - 1));
    if constexpr (kWidest >= 3)
      if (vectors == 3) panel<kRows, 3>(m, tile);
    if (vectors == 2) panel<kRows, 2>(m, tile);
    if (vectors == 1) panel<12, 1>(m, tile);
    j += width;
  }
}

// The tile at row i of one column panel (`tile.run<R, NV, Masked>(i)`, for rows_of_panel).
struct Tile {
  int64_t k;
  const uint16_t* a;
  int64_t lda;
  const uint16_t* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
  int64_t width_last;
  bool accumulate;
  __m512* row_max;  // null: no maxima
  template <int R, int NV, bool Masked>
  TIDE_FP16 void run(int64_t i) const {
    tile<R, NV, Masked>(k / 2, a + i * lda, lda, b, ldb, c + i * ldc, ldc, width_last, accumulate,
                        row_max ? row_max + i : nullptr);
  }
};

TIDE_FP16 void scores(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                      float* c, int64_t ldc, float* row_max) {
  constexpr int64_t kRows = 256;  // row maxima kept as vectors for this many rows at a time (16 KiB)
  __m512 max_vectors[kRows];
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const int64_t rows = std::min(kRows, m - i0);
    for (int64_t r = 0; r < rows; ++r) max_vectors[r] = _mm512_set1_ps(row_max[i0 + r]);
    // 8 × 48 tiles: 24 accumulators, 3 loads of kᵀ and 8 broadcasts per 24 FMAs.
    panels<8, 3>(rows, n, [&](int64_t j, int64_t width_last) {
      return Tile{k, a + i0 * lda, lda, b + 2 * j, ldb, c + i0 * ldc + j, ldc, width_last, false, max_vectors};
    });
    for (int64_t r = 0; r < rows; ++r) row_max[i0 + r] = _mm512_reduce_max_ps(max_vectors[r]);
  }
}

TIDE_FP16 void product(int64_t m, int64_t n, int64_t k, const uint16_t* p, int64_t ldp, const uint16_t* v, int64_t ldv,
                       float* c, int64_t ldc, bool accumulate) {
  // 8 × 48 tiles (a head dimension of 40 is one masked panel, 64 one panel of 48 and one of 16): 24 accumulators,
  // 3 loads of v and 8 broadcasts per 24 FMAs.
  panels<8, 3>(m, n, [&](int64_t j, int64_t width_last) {
    return Tile{k, p, ldp, v + 2 * j, ldv, c + j, ldc, width_last, accumulate, nullptr};
  });
}

// One row of d ≤ kHalfHeadDimMax floats into float16 bits, folding |x| into `max` and NaNs into `nan`.
TIDE_FP16 inline void row_to_half(const float* x, int64_t d, uint16_t* out, __m512& max, __mmask16& nan) {
  for (int64_t c = 0; c < d; c += 16) {
    const __mmask16 live = lanes16(d - c);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + c);
    max = _mm512_max_ps(max, _mm512_abs_ps(v));  // lanes past d read as 0
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    _mm256_mask_storeu_epi16(out + c, live, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
}

TIDE_FP16 float max_of(__m512 max, __mmask16 nan) { return nan ? NAN : _mm512_reduce_max_ps(max); }

TIDE_FP16 float rows(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
  __m512 max = _mm512_setzero_ps();
  __mmask16 nan = 0;
  for (int64_t j = 0; j < n; ++j) row_to_half(x + j * ld, d, out + j * d, max, nan);
  return max_of(max, nan);
}

TIDE_FP16 float column_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
  __m512 max = _mm512_setzero_ps();
  __mmask16 nan = 0;
  uint16_t row[kHalfHeadDimMax];
  for (int64_t j = 0; j < n; ++j) {
    row_to_half(x + j * ld, d, row, max, nan);
    for (int64_t p = 0; p < d / 2; ++p) std::memcpy(out + p * 2 * n + 2 * j, row + 2 * p, 2 * sizeof(uint16_t));
  }
  return max_of(max, nan);
}

TIDE_FP16 float row_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
  __m512 max = _mm512_setzero_ps();
  __mmask16 nan = 0;
  uint16_t first[kHalfHeadDimMax], second[kHalfHeadDimMax];
  for (int64_t p = 0; p < (n + 1) / 2; ++p) {
    row_to_half(x + 2 * p * ld, d, first, max, nan);
    if (2 * p + 1 < n) row_to_half(x + (2 * p + 1) * ld, d, second, max, nan);
    else std::fill(second, second + d, uint16_t(0));
    uint16_t* o = out + p * 2 * d;
    for (int64_t c = 0; c < d; ++c) {
      o[2 * c] = first[c];
      o[2 * c + 1] = second[c];
    }
  }
  return max_of(max, nan);
}

#undef TIDE_FP16
#endif

[[noreturn]] void unavailable() { throw std::logic_error("attention_f16: needs a CPU with AVX512-FP16"); }

}  // namespace

bool attention_half_products_available() {
#ifdef TIDE_X86
  return kHasFp16;
#else
  return false;
#endif
}

bool attention_half_products_fit(int64_t d, float max_abs_q, float max_abs_k, float max_abs_v) {
  constexpr double kLimit = 32768.0;  // half of float16's largest finite value, 65504
  return d >= 1 && d <= kHalfHeadDimMax && double(std::min(d, kHalfSumLength)) * max_abs_q * max_abs_k <= kLimit &&
         double(kHalfSumLength) * max_abs_v <= kLimit;
}

void scores_half(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
                 float* c, int64_t ldc, float* row_max) {
#ifdef TIDE_X86
  if (!kHasFp16) unavailable();
  if (k > kHalfHeadDimMax || k % 2) throw std::invalid_argument("scores_half: k odd or over kHalfHeadDimMax");
  scores(m, n, k, a, lda, b, ldb, c, ldc, row_max);
#else
  unavailable();
#endif
}

void gemm_half(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb,
               float* c, int64_t ldc, bool accumulate) {
#ifdef TIDE_X86
  if (!kHasFp16) unavailable();
  if (k % 2) throw std::invalid_argument("gemm_half: k odd");
  product(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
#else
  unavailable();
#endif
}

#ifdef TIDE_X86
namespace {
void check_pack(int64_t d) {
  if (!kHasFp16) unavailable();
  if (d < 1 || d > kHalfHeadDimMax) throw std::invalid_argument("pack_half: d outside 1 .. kHalfHeadDimMax");
}
}  // namespace
#endif

float pack_half_rows(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
#ifdef TIDE_X86
  check_pack(d);
  return rows(x, ld, n, d, out);
#else
  unavailable();
#endif
}

float pack_half_column_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
#ifdef TIDE_X86
  check_pack(d);
  if (d % 2) throw std::invalid_argument("pack_half_column_pairs: d odd");
  return column_pairs(x, ld, n, d, out);
#else
  unavailable();
#endif
}

float pack_half_row_pairs(const float* x, int64_t ld, int64_t n, int64_t d, uint16_t* out) {
#ifdef TIDE_X86
  check_pack(d);
  return row_pairs(x, ld, n, d, out);
#else
  unavailable();
#endif
}

}  // namespace tide::kernels
