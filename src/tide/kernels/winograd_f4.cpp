// The transforms of Winograd F(4×4, 3×3) on the points 0, ±1, ±2 and ∞ (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks"). Each 2-D transform is its 1-D transform applied to the columns, then to the
// rows; the 1-D transforms are written once for a float and for 8 channels in an AVX2 register.
#include "tide/kernels/winograd_tile.h"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define TIDE_X86 1
#endif

// The 1-D and 2-D transforms take and return __m256 by value; they are always inlined into the AVX2
// functions, so the ABI note GCC gives for them does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace tide::kernels {
namespace {

constexpr int kAlpha = 6;  // input tile
constexpr int kM = 4;      // output tile

// Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] times d.
template <class V>
inline __attribute__((always_inline)) void input_1d(const V d[kAlpha], V o[kAlpha]) {
  const V a = d[4] - d[2] * 4.0f, b = d[3] - d[1] * 4.0f, c = d[4] - d[2], e = (d[3] - d[1]) * 2.0f;
  o[0] = d[0] * 4.0f - d[2] * 5.0f + d[4];
  o[1] = a + b;
  o[2] = a - b;
  o[3] = c + e;
  o[4] = c - e;
  o[5] = d[1] * 4.0f - d[3] * 5.0f + d[5];
}

// Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] times m.
template <class V>
inline __attribute__((always_inline)) void output_1d(const V m[kAlpha], V o[kM]) {
  const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  o[0] = m[0] + s12 + s34;
  o[1] = d12 + d34 * 2.0f;
  o[2] = s12 + s34 * 4.0f;
  o[3] = d12 + d34 * 8.0f + m[5];
}

// G = [¼ 0 0; -⅙ -⅙ -⅙; -⅙ ⅙ -⅙; 1/24 1/12 ⅙; 1/24 -1/12 ⅙; 0 0 1] times g.
template <class V>
inline __attribute__((always_inline)) void weight_1d(const V g[3], V o[kAlpha]) {
  const V outer = g[0] + g[2], quarter = g[0] * 0.25f + g[2];
  o[0] = g[0] * 0.25f;
  o[1] = (outer + g[1]) * (-1.0f / 6.0f);
  o[2] = (outer - g[1]) * (-1.0f / 6.0f);
  o[3] = (quarter + g[1] * 0.5f) * (1.0f / 6.0f);
  o[4] = (quarter - g[1] * 0.5f) * (1.0f / 6.0f);
  o[5] = g[2];
}

// One value (float) or 8 (__m256) from p, and back: memcpy compiles to the plain or vector load and store.
template <class V>
inline __attribute__((always_inline)) V load(const float* p) {
  V value;
  std::memcpy(&value, p, sizeof(V));
  return value;
}
template <class V>
inline __attribute__((always_inline)) void store(float* p, V value) {
  std::memcpy(p, &value, sizeof(V));
}

// Bᵀ·d·B of the channel group at c: d[p] + c is input pixel p's, v[ξ·v_stride + c] receives position ξ.
template <class V>
inline __attribute__((always_inline)) void input_2d(const float* const* d, int64_t c, float* v, int64_t v_stride) {
  V t[kAlpha][kAlpha];  // Bᵀ·d, column by column
  for (int j = 0; j < kAlpha; ++j) {
    V column[kAlpha], out[kAlpha];
    for (int i = 0; i < kAlpha; ++i) column[i] = load<V>(d[i * kAlpha + j] + c);
    input_1d(column, out);
    for (int i = 0; i < kAlpha; ++i) t[i][j] = out[i];
  }
  for (int i = 0; i < kAlpha; ++i) {  // (Bᵀ·d)·B, row by row
    V out[kAlpha];
    input_1d(t[i], out);
    for (int j = 0; j < kAlpha; ++j) store(v + (i * kAlpha + j) * v_stride + c, out[j]);
  }
}

// Aᵀ·m·A of the channel group at k (position ξ at m[ξ·m_stride + k]) + bias: y[a][b] is output pixel (a, b).
template <class V>
inline __attribute__((always_inline)) void output_2d(const float* m, int64_t m_stride, int64_t k, V bias,
                                                     V y[kM][kM]) {
  V r[kM][kAlpha];  // Aᵀ·m
  for (int j = 0; j < kAlpha; ++j) {
    V column[kAlpha], out[kM];
    for (int i = 0; i < kAlpha; ++i) column[i] = load<V>(m + (i * kAlpha + j) * m_stride + k);
    output_1d(column, out);
    for (int a = 0; a < kM; ++a) r[a][j] = out[a];
  }
  for (int a = 0; a < kM; ++a) {
    output_1d(r[a], y[a]);
    for (int b = 0; b < kM; ++b) y[a][b] = y[a][b] + bias;
  }
}

// G·g from the 3×3 taps g[i][j]: the rows of G·g, each then transformed along j by the caller.
template <class V>
inline __attribute__((always_inline)) void weight_columns(const V g[3][3], V rows[kAlpha][3]) {
  for (int j = 0; j < 3; ++j) {
    const V column[3] = {g[0][j], g[1][j], g[2][j]};
    V out[kAlpha];
    weight_1d(column, out);
    for (int a = 0; a < kAlpha; ++a) rows[a][j] = out[a];
  }
}

void input_transform_scalar(const float* const* d, int64_t c0, int64_t c1, float* v, int64_t v_stride) {
  for (int64_t c = c0; c < c1; ++c) input_2d<float>(d, c, v, v_stride);
}

void output_transform_scalar(const float* m, int64_t m_stride, const float* bias, int64_t k0, int64_t k1,
                             float* const* y) {
  for (int64_t k = k0; k < k1; ++k) {
    float out[kM][kM];
    output_2d<float>(m, m_stride, k, bias ? bias[k] : 0.0f, out);
    for (int p = 0; p < kM * kM; ++p)
      if (y[p]) y[p][k] = out[p / kM][p % kM];
  }
}

// For the block's rows [row_begin, row_end) and columns [col_begin, col_end) (WinogradTileKernels's layout).
void weight_transform_rows_scalar(const WeightTaps& w, int a0, int a1, int64_t r0, int64_t rows, int64_t k0,
                                  int64_t width, int64_t row_begin, int64_t row_end, int64_t col_begin,
                                  int64_t col_end, float* u) {
  const int64_t step = rows * width;
  for (int64_t c = row_begin; c < row_end; ++c)
    for (int64_t col = col_begin; col < col_end; ++col) {
      const float* e = w.base + (r0 + c) * w.row_stride + (k0 + col) * w.col_stride;
      float g[3][3], gg[kAlpha][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = e[w.tap[i * 3 + j]];
      weight_columns(g, gg);
      for (int a = a0; a < a1; ++a) {
        float out[kAlpha];
        weight_1d(gg[a], out);
        for (int b = 0; b < kAlpha; ++b) u[((a - a0) * kAlpha + b) * step + c * width + col] = out[b];
      }
    }
}

#ifdef TIDE_X86
const bool kHasAvx2 = __builtin_cpu_supports("avx2");

__attribute__((target("avx2"))) void input_transform_avx2(const float* const* d, int64_t C, float* v,
                                                          int64_t v_stride) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) input_2d<__m256>(d, c, v, v_stride);
  input_transform_scalar(d, c, C, v, v_stride);
}

__attribute__((target("avx2"))) void output_transform_avx2(const float* m, int64_t m_stride, const float* bias,
                                                           int64_t K, float* const* y) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 out[kM][kM];
    output_2d<__m256>(m, m_stride, k, bias ? _mm256_loadu_ps(bias + k) : _mm256_setzero_ps(), out);
    for (int p = 0; p < kM * kM; ++p)
      if (y[p]) _mm256_storeu_ps(y[p] + k, out[p / kM][p % kM]);
  }
  output_transform_scalar(m, m_stride, bias, k, K, y);
}

// Columns consecutive (HWIO): 8 columns of one row per vector.
__attribute__((target("avx2"))) void weight_transform_rows_avx2(const WeightTaps& w, int a0, int a1, int64_t r0,
                                                                int64_t rows, int64_t k0, int64_t width, float* u) {
  const int64_t step = rows * width, full = width / 8 * 8;
  // Each row's panel is 128 bytes of a row several KiB long (1280 channels: 5 KiB), a stride the hardware
  // prefetchers do not follow: fetched 4 rows ahead, 1280-channel layers on 16×16 maps ran 1.16–1.25× faster.
  constexpr int64_t prefetch_rows = 4;
  for (int64_t c = 0; c < rows; ++c) {
    const float* g = w.base + (r0 + c) * w.row_stride + k0;
    if (c + prefetch_rows < rows)
      for (int t = 0; t < 9; ++t)
        for (int64_t col = 0; col < width; col += 16)
          _mm_prefetch(reinterpret_cast<const char*>(g + prefetch_rows * w.row_stride + w.tap[t] + col), _MM_HINT_T0);
    for (int64_t col = 0; col < full; col += 8) {
      __m256 t[3][3], gg[kAlpha][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) t[i][j] = _mm256_loadu_ps(g + w.tap[i * 3 + j] + col);
      weight_columns(t, gg);
      for (int a = a0; a < a1; ++a) {
        __m256 out[kAlpha];
        weight_1d(gg[a], out);
        for (int b = 0; b < kAlpha; ++b) _mm256_storeu_ps(u + ((a - a0) * kAlpha + b) * step + c * width + col, out[b]);
      }
    }
  }
  if (full < width) weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, 0, rows, full, width, u);
}

// Rows consecutive (channels last, as training keeps the weights): 8 rows of one column per vector, each
// position's 8×8 blocks transposed in registers into u's [row][column] order.
__attribute__((target("avx2"))) void weight_transform_rows_transposed_avx2(const WeightTaps& w, int a0, int a1,
                                                                           int64_t r0, int64_t rows, int64_t k0,
                                                                           int64_t width, float* u) {
  const int64_t step = rows * width, full_rows = rows / 8 * 8, full_cols = width / 8 * 8;
  __m256 block[kAlpha * kAlpha][8];  // [position][column of the 8]: 8 rows each
  for (int64_t r = 0; r < full_rows; r += 8)
    for (int64_t col = 0; col < full_cols; col += 8) {
      for (int cc = 0; cc < 8; ++cc) {
        const float* g = w.base + (r0 + r) + (k0 + col + cc) * w.col_stride;
        __m256 t[3][3], gg[kAlpha][3];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) t[i][j] = _mm256_loadu_ps(g + w.tap[i * 3 + j]);
        weight_columns(t, gg);
        for (int a = a0; a < a1; ++a) {
          __m256 out[kAlpha];
          weight_1d(gg[a], out);
          for (int b = 0; b < kAlpha; ++b) block[(a - a0) * kAlpha + b][cc] = out[b];
        }
      }
      for (int p = 0; p < (a1 - a0) * kAlpha; ++p) {
        transpose8x8(block[p]);
        for (int rr = 0; rr < 8; ++rr) _mm256_storeu_ps(u + p * step + (r + rr) * width + col, block[p][rr]);
      }
    }
  weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, full_rows, rows, 0, width, u);
  weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, 0, full_rows, full_cols, width, u);
}
#endif

void input_transform(const float* const* d, int64_t C, float* v, int64_t v_stride) {
#ifdef TIDE_X86
  if (kHasAvx2) return input_transform_avx2(d, C, v, v_stride);
#endif
  input_transform_scalar(d, 0, C, v, v_stride);
}

void output_transform(const float* m, int64_t m_stride, const float* bias, int64_t K, float* const* y) {
#ifdef TIDE_X86
  if (kHasAvx2) return output_transform_avx2(m, m_stride, bias, K, y);
#endif
  output_transform_scalar(m, m_stride, bias, 0, K, y);
}

void weight_transform_rows(const WeightTaps& w, int a0, int a1, int64_t r0, int64_t rows, int64_t k0, int64_t width,
                           float* u) {
#ifdef TIDE_X86
  if (kHasAvx2 && w.col_stride == 1) return weight_transform_rows_avx2(w, a0, a1, r0, rows, k0, width, u);
  if (kHasAvx2 && w.row_stride == 1) return weight_transform_rows_transposed_avx2(w, a0, a1, r0, rows, k0, width, u);
#endif
  weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, 0, rows, 0, width, u);
}

}  // namespace

const WinogradTileKernels& winograd_f4x4_kernels() {
  static const WinogradTileKernels kernels{kM, kAlpha, input_transform, output_transform, weight_transform_rows};
  return kernels;
}

}  // namespace tide::kernels
