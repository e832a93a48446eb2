// A convolution weight [K, C, kh, kw] as the CPU kernels read it in place, whatever its memory layout:
// element (tap t = i·kw + j, row r, column col) at base[tap[t] + r·row_stride + col·col_stride]. Row: an input
// channel of the convolution computed; column: one of its output channels. The forward reads rows c and
// columns k; the input gradient, whose input channels are the forward's outputs, rows k and columns c with
// the taps flipped. Kernels are fast where the columns (an HWIO weight's output channels) or the rows (a
// channels-last weight's input channels) are consecutive: no layout then needs a copy of the weight.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tide::kernels {

struct WeightTaps {
  const float* base;
  std::vector<int64_t> tap;  // kh·kw offsets
  int64_t row_stride, col_stride;
};

// A float32 weight [K, C, kh, kw]'s taps with rows along dimension `rows_dim` and columns along `cols_dim`,
// rotated by 180° (`flipped`) or not. A dimension of size 1 counts as consecutive whatever its stride.
WeightTaps weight_taps(const at::Tensor& weight, int rows_dim, int cols_dim, bool flipped);

#if defined(__x86_64__)
// 8 vectors (the rows of an 8×8 block) -> the block's columns, in place: for reading rows that are
// consecutive in memory as columns.
__attribute__((target("avx2"))) inline void transpose8x8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}
#endif

}  // namespace tide::kernels
