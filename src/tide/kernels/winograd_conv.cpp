#include "tide/kernels/winograd_conv.h"

#include "tide/kernels/gemm_cpu.h"
#include "tide/kernels/weight_taps.h"
#include "tide/kernels/winograd_tile.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define TIDE_X86 1
#endif

namespace tide::kernels {
namespace {

// The transforms run along channels, contiguous in channels-last tensors: 8 at a time with AVX2, the rest
// (and CPUs without AVX2) one at a time in the same arithmetic.

// Input tile transform V = Bᵀ·d·B of one 4×4 input tile for channels [c0, c1):
//   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
// d[i·4 + j] points at the channels of the tile's pixel (i, j) (a zero row outside the image);
// v[ξ·v_stride + c] receives position ξ = i·4 + j.
void input_transform_scalar(const float* const* d, int64_t c0, int64_t c1, float* v, int64_t v_stride) {
  for (int64_t c = c0; c < c1; ++c) {
    float t[4][4];  // Bᵀ·d
    for (int j = 0; j < 4; ++j) {
      const float d0 = d[j][c], d1 = d[4 + j][c], d2 = d[8 + j][c], d3 = d[12 + j][c];
      t[0][j] = d0 - d2;
      t[1][j] = d1 + d2;
      t[2][j] = d2 - d1;
      t[3][j] = d1 - d3;
    }
    for (int i = 0; i < 4; ++i) {  // (Bᵀ·d)·B
      v[(i * 4 + 0) * v_stride + c] = t[i][0] - t[i][2];
      v[(i * 4 + 1) * v_stride + c] = t[i][1] + t[i][2];
      v[(i * 4 + 2) * v_stride + c] = t[i][2] - t[i][1];
      v[(i * 4 + 3) * v_stride + c] = t[i][1] - t[i][3];
    }
  }
}

// Output tile transform Y = Aᵀ·m·A + bias of one tile for channels [k0, k1): Aᵀ = [1 1 1 0; 0 1 -1 -1].
// m[ξ·m_stride + k] holds position ξ of the products; y[a·2 + b] points at output pixel (a, b) of the 2×2
// tile (null where it falls outside the image).
void output_transform_scalar(const float* m, int64_t m_stride, const float* bias, int64_t k0, int64_t k1,
                             float* const* y) {
  for (int64_t k = k0; k < k1; ++k) {
    float r[2][4];  // Aᵀ·m
    for (int j = 0; j < 4; ++j) {
      const float m0 = m[j * m_stride + k], m1 = m[(4 + j) * m_stride + k], m2 = m[(8 + j) * m_stride + k],
                  m3 = m[(12 + j) * m_stride + k];
      r[0][j] = m0 + m1 + m2;
      r[1][j] = m1 - m2 - m3;
    }
    const float b = bias ? bias[k] : 0.0f;
    const float out[4] = {r[0][0] + r[0][1] + r[0][2] + b, r[0][1] - r[0][2] - r[0][3] + b,
                          r[1][0] + r[1][1] + r[1][2] + b, r[1][1] - r[1][2] - r[1][3] + b};
    for (int p = 0; p < 4; ++p)
      if (y[p]) y[p][k] = out[p];
  }
}


// Rows [a0, a1) of the weight transform G·g·Gᵀ (positions ξ = a·4 + b, b = 0..3) for a block of rows
// [r0, r0 + rows) and columns [k0, k0 + width): u[((a - a0)·4 + b)·rows·width + (r - r0)·width + (k - k0)],
// here for the block's rows [row_begin, row_end) and columns [col_begin, col_end).
// G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]: r = G[a]·g combines g's rows, then Gᵀ its columns.
void weight_transform_rows_scalar(const WeightTaps& w, int a0, int a1, int64_t r0, int64_t rows, int64_t k0,
                                  int64_t width, int64_t row_begin, int64_t row_end, int64_t col_begin,
                                  int64_t col_end, float* u) {
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  const int64_t step = rows * width;
  for (int64_t c = row_begin; c < row_end; ++c)
    for (int64_t col = col_begin; col < col_end; ++col) {
      const float* e = w.base + (r0 + c) * w.row_stride + (k0 + col) * w.col_stride;
      float g[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = e[w.tap[i * 3 + j]];
      for (int a = a0; a < a1; ++a) {
        float r[3];
        for (int j = 0; j < 3; ++j) r[j] = G[a][0] * g[0][j] + G[a][1] * g[1][j] + G[a][2] * g[2][j];
        float* out = u + (a - a0) * 4 * step + c * width + col;
        out[0] = r[0];
        out[step] = 0.5f * (r[0] + r[1] + r[2]);
        out[2 * step] = 0.5f * (r[0] - r[1] + r[2]);
        out[3 * step] = r[2];
      }
    }
}

#ifdef TIDE_X86
const bool kHasAvx2 = __builtin_cpu_supports("avx2");

// Positions (a, 0..3) of G·g·Gᵀ from the 3×3 taps t, 8 channels at a time.
__attribute__((target("avx2"))) inline void weight_transform_row_avx2(int a, const __m256 t[3][3], __m256 out[4]) {
  const __m256 half = _mm256_set1_ps(0.5f);
  __m256 r[3];  // G[a]·g
  for (int j = 0; j < 3; ++j) {
    switch (a) {
      case 0: r[j] = t[0][j]; break;
      case 1: r[j] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(t[0][j], t[1][j]), t[2][j])); break;
      case 2: r[j] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(t[0][j], t[1][j]), t[2][j])); break;
      default: r[j] = t[2][j]; break;
    }
  }
  out[0] = r[0];
  out[1] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(r[0], r[1]), r[2]));
  out[2] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(r[0], r[1]), r[2]));
  out[3] = r[2];
}

__attribute__((target("avx2"))) void weight_transform_rows_avx2(const WeightTaps& w, int a0, int a1, int64_t r0,
                                                                int64_t rows, int64_t k0, int64_t width, float* u) {
  const int64_t step = rows * width, full = width / 8 * 8;
  for (int64_t c = 0; c < rows; ++c) {
    const float* g = w.base + (r0 + c) * w.row_stride + k0;  // tap t at g + w.tap[t]; columns consecutive
    for (int64_t col = 0; col < full; col += 8) {
      __m256 t[3][3];  // the taps, each read once for every row a asked for
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) t[i][j] = _mm256_loadu_ps(g + w.tap[i * 3 + j] + col);
      for (int a = a0; a < a1; ++a) {
        __m256 out[4];
        weight_transform_row_avx2(a, t, out);
        for (int b = 0; b < 4; ++b) _mm256_storeu_ps(u + ((a - a0) * 4 + b) * step + c * width + col, out[b]);
      }
    }
  }
  if (full < width) weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, 0, rows, full, width, u);
}

// The same where the rows are consecutive instead (row_stride 1): 8 rows of one column per vector, the 8×8
// blocks of each position transposed in registers into u's [row][column] order.
__attribute__((target("avx2"))) void weight_transform_rows_transposed_avx2(const WeightTaps& w, int a0, int a1,
                                                                           int64_t r0, int64_t rows, int64_t k0,
                                                                           int64_t width, float* u) {
  const int64_t step = rows * width, full_rows = rows / 8 * 8, full_cols = width / 8 * 8;
  const int positions = 4 * (a1 - a0);
  __m256 block[16][8];  // [position][column of the 8]: 8 rows each
  for (int64_t r = 0; r < full_rows; r += 8)
    for (int64_t col = 0; col < full_cols; col += 8) {
      for (int cc = 0; cc < 8; ++cc) {
        const float* g = w.base + (r0 + r) + (k0 + col + cc) * w.col_stride;
        __m256 t[3][3];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) t[i][j] = _mm256_loadu_ps(g + w.tap[i * 3 + j]);
        for (int a = a0; a < a1; ++a) {
          __m256 out[4];
          weight_transform_row_avx2(a, t, out);
          for (int b = 0; b < 4; ++b) block[(a - a0) * 4 + b][cc] = out[b];
        }
      }
      for (int p = 0; p < positions; ++p) {
        transpose8x8(block[p]);
        for (int rr = 0; rr < 8; ++rr) _mm256_storeu_ps(u + p * step + (r + rr) * width + col, block[p][rr]);
      }
    }
  weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, full_rows, rows, 0, width, u);
  weight_transform_rows_scalar(w, a0, a1, r0, rows, k0, width, 0, full_rows, full_cols, width, u);
}

__attribute__((target("avx2"))) void input_transform_avx2(const float* const* d, int64_t C, float* v,
                                                          int64_t v_stride) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 t[4][4];
    for (int j = 0; j < 4; ++j) {
      const __m256 d0 = _mm256_loadu_ps(d[j] + c), d1 = _mm256_loadu_ps(d[4 + j] + c),
                   d2 = _mm256_loadu_ps(d[8 + j] + c), d3 = _mm256_loadu_ps(d[12 + j] + c);
      t[0][j] = _mm256_sub_ps(d0, d2);
      t[1][j] = _mm256_add_ps(d1, d2);
      t[2][j] = _mm256_sub_ps(d2, d1);
      t[3][j] = _mm256_sub_ps(d1, d3);
    }
    for (int i = 0; i < 4; ++i) {
      _mm256_storeu_ps(v + (i * 4 + 0) * v_stride + c, _mm256_sub_ps(t[i][0], t[i][2]));
      _mm256_storeu_ps(v + (i * 4 + 1) * v_stride + c, _mm256_add_ps(t[i][1], t[i][2]));
      _mm256_storeu_ps(v + (i * 4 + 2) * v_stride + c, _mm256_sub_ps(t[i][2], t[i][1]));
      _mm256_storeu_ps(v + (i * 4 + 3) * v_stride + c, _mm256_sub_ps(t[i][1], t[i][3]));
    }
  }
  input_transform_scalar(d, c, C, v, v_stride);
}

__attribute__((target("avx2"))) void output_transform_avx2(const float* m, int64_t m_stride, const float* bias,
                                                           int64_t K, float* const* y) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 r[2][4];
    for (int j = 0; j < 4; ++j) {
      const __m256 m0 = _mm256_loadu_ps(m + j * m_stride + k), m1 = _mm256_loadu_ps(m + (4 + j) * m_stride + k),
                   m2 = _mm256_loadu_ps(m + (8 + j) * m_stride + k), m3 = _mm256_loadu_ps(m + (12 + j) * m_stride + k);
      r[0][j] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
      r[1][j] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
    }
    const __m256 b = bias ? _mm256_loadu_ps(bias + k) : _mm256_setzero_ps();
    const __m256 out[4] = {
        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(r[0][0], r[0][1]), r[0][2]), b),
        _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(r[0][1], r[0][2]), r[0][3]), b),
        _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(r[1][0], r[1][1]), r[1][2]), b),
        _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(r[1][1], r[1][2]), r[1][3]), b)};
    for (int p = 0; p < 4; ++p)
      if (y[p]) _mm256_storeu_ps(y[p] + k, out[p]);
  }
  output_transform_scalar(m, m_stride, bias, k, K, y);
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

// The α×α input tile (α = m + 2) of `tile` (numbered over N, tile rows, tile columns) of F(m×m, 3×3):
// d[i·α + j] points at the channels of its pixel (i, j), `zeros` in the padding.
void gather_input_tile(const float* x, int64_t H, int64_t W, int64_t C, int64_t tiles_h, int64_t tiles_w,
                       int64_t tile, const float* zeros, const float** d, int m = 2) {
  const int64_t n = tile / (tiles_h * tiles_w), ty = tile / tiles_w % tiles_h, tx = tile % tiles_w;
  const int alpha = m + 2;
  for (int i = 0; i < alpha; ++i)
    for (int j = 0; j < alpha; ++j) {
      const int64_t yy = m * ty - 1 + i, xx = m * tx - 1 + j;  // padding 1
      d[i * alpha + j] = yy >= 0 && yy < H && xx >= 0 && xx < W ? x + ((n * H + yy) * W + xx) * C : zeros;
    }
}

// The output pixels of `tile`'s m×m block: out[a·m + b] points at pixel (a, b)'s channels, null outside.
void scatter_output_tile(float* y, int64_t H, int64_t W, int64_t K, int64_t tiles_h, int64_t tiles_w, int64_t tile,
                         float** out, int m = 2) {
  const int64_t n = tile / (tiles_h * tiles_w), ty = tile / tiles_w % tiles_h, tx = tile % tiles_w;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      const int64_t yy = m * ty + i, xx = m * tx + j;
      out[i * m + j] = yy < H && xx < W ? y + ((n * H + yy) * W + xx) * K : nullptr;
    }
}

// C[m, n] (ldc) = A[m, k] (lda) · B[k, n] (ldb), or += with `accumulate`: tide's kernel where the CPU has it.
void product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
             int64_t ldc, bool accumulate) {
  if (gemm_f32_available()) return gemm_f32(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
  const auto options = at::TensorOptions().dtype(at::kFloat);
  at::Tensor c_view = at::from_blob(c, {m, n}, {ldc, 1}, options);
  const at::Tensor a_view = at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor b_view = at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, options);
  if (accumulate) c_view.addmm_(a_view, b_view);
  else at::mm_out(c_view, a_view, b_view);
}

}  // namespace

int64_t winograd_tiles(int64_t batch, int64_t height, int64_t width, int64_t output_tile) {
  return batch * ((height + output_tile - 1) / output_tile) * ((width + output_tile - 1) / output_tile);
}

bool winograd_conv3x3_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                                int64_t width) {
  const int64_t tiles = winograd_tiles(batch, height, width);
  const double macs = 9.0 * double(batch * height * width) * double(in_channels * out_channels);
  return gemm_f32_available() && std::min(in_channels, out_channels) >= 16 && macs >= double(1 << 27) &&
         (2 * tiles >= std::max(in_channels, out_channels) || tiles >= 256);
}

bool winograd_f4_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height, int64_t width) {
  return gemm_f32_available() && std::min(in_channels, out_channels) >= 16 && winograd_tiles(batch, height, width, 4) >= 16;
}

bool winograd_few_tiles_input_fits_cache(int64_t batch, int64_t in_channels, int64_t height, int64_t width) {
  return 16.0 * 4.0 * double(winograd_tiles(batch, height, width)) * double(in_channels) <= double(16 << 20);
}

bool winograd_conv3x3_few_tiles_pays_off(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                                         int64_t width) {
  const int64_t tiles = winograd_tiles(batch, height, width);
  const double buffer_bytes = 16.0 * 4.0 * double(tiles) * double(in_channels + out_channels);
  return gemm_f32_available() && std::min(in_channels, out_channels) >= 16 && tiles >= 32 &&
         buffer_bytes <= 48.0 * (1 << 20);
}

bool winograd_few_tiles_preferred(int64_t batch, int64_t in_channels, int64_t out_channels, int64_t height,
                                  int64_t width, bool chunked_pays) {
  return winograd_conv3x3_few_tiles_pays_off(batch, in_channels, out_channels, height, width) &&
         (!chunked_pays || winograd_few_tiles_input_fits_cache(batch, in_channels, height, width));
}

bool winograd_conv3x3_supported(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  if (!x.defined() || !weight.defined() || x.dim() != 4 || weight.dim() != 4) return false;
  // Any weight dtype: callers widen a 16-bit or int8 weight before winograd_weight_transform().
  if (x.scalar_type() != at::kFloat) return false;
  if (!x.device().is_cpu() || !weight.device().is_cpu()) return false;
  if (c10::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  return stride == 1 && padding == 1 && weight.size(2) == 3 && weight.size(3) == 3 && weight.size(1) == x.size(1);
}

WinogradWeights winograd_weight_transform(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3, "winograd: weight must be [K, C, 3, 3]");
  const int64_t K = weight.size(0), C = weight.size(1);
  // G·g·Gᵀ for all channel pairs at once: position (a, b) of the 4×4 result is Σᵢⱼ G[a][i]·G[b][j]·g[i][j], so
  // with g as [9, C·K] it is one product with G ⊗ G [16, 9]. G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1].
  const at::Tensor G = at::tensor({1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0.0f, 0.0f, 1.0f}).view({4, 3});
  const at::Tensor g = weight.to(at::kFloat).permute({2, 3, 1, 0}).reshape({9, C * K});  // [3·3, C·K]
  const at::Tensor u = at::mm(at::kron(G, G), g).view({16, C, K});                         // [16, C, K]
  const int64_t full = K / kWinogradPanel * kWinogradPanel;
  std::vector<at::Tensor> panels;  // per position: the full panels [K/40, C, 40], then the rest [C, K % 40]
  if (full > 0)
    panels.push_back(
        u.narrow(2, 0, full).reshape({16, C, full / kWinogradPanel, kWinogradPanel}).permute({0, 2, 1, 3}).reshape({16, -1}));
  if (K > full) panels.push_back(u.narrow(2, full, K - full).reshape({16, -1}));
  return {at::cat(panels, 1).contiguous(), C, K};  // [16, C·K]
}

at::Tensor winograd_conv3x3(const at::Tensor& x_in, const WinogradWeights& u, const at::Tensor& bias_in,
                            int64_t tiles_per_chunk) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "winograd: x must be float32 [N, C, H, W]");
  TORCH_CHECK(u.in_channels == x_in.size(1) && u.packed.is_contiguous() &&
                  u.packed.numel() == 16 * u.in_channels * u.out_channels,
              "winograd: the transformed weights are for ", u.in_channels, " input channels, x has ", x_in.size(1));
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = u.out_channels;
  at::Tensor y = at::empty({N, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  const at::Tensor bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : bias_in;

  const int64_t tiles_h = (H + 1) / 2, tiles_w = (W + 1) / 2, tiles = N * tiles_h * tiles_w;
  // Each worker takes a chunk of T tiles through all three phases (transform, 16 products, transform back)
  // in its own buffers, 16·T·(C + K) floats: up to 8 MiB, so the products' operands stay in the caches
  // while every chunk streams all of u (16·C·K floats) once: T = 128 at 512 channels, measured faster
  // than 32 (1.35× against 1.2× over oneDNN at 512 × 64 × 64) and no slower than 192.
  const int64_t T = std::min(tiles, tiles_per_chunk > 0 ? tiles_per_chunk
                                                        : std::clamp<int64_t>((int64_t(1) << 21) / (16 * (C + K)), 16, 256));
  const int64_t chunks = (tiles + T - 1) / T;
  const std::vector<float> zeros(C, 0.0f);

  const float* xp = x.data_ptr<float>();
  const float* up = u.packed.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  // Chunks are handed out one at a time: on a shared machine a static split waits for the slowest worker.
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), chunks), 1, [&](int64_t, int64_t) {
    // Each worker's buffers are kept from call to call: a fresh 8 MiB would be page faults and zeroing.
    thread_local std::vector<float> v_buffer, m_buffer;
    if (v_buffer.size() < size_t(16 * T * C)) v_buffer.resize(16 * T * C);
    if (m_buffer.size() < size_t(16 * T * K)) m_buffer.resize(16 * T * K);
    float* const v = v_buffer.data();  // [16, T, C] transformed input of a chunk
    float* const m = m_buffer.data();  // [16, T, K] its products with u
    const float* d[16];
    float* out[4];
    for (int64_t chunk = next.fetch_add(1); chunk < chunks; chunk = next.fetch_add(1)) {
      const int64_t t0 = chunk * T, count = std::min(T, tiles - t0);
      for (int64_t t = 0; t < count; ++t) {
        gather_input_tile(xp, H, W, C, tiles_h, tiles_w, t0 + t, zeros.data(), d);
        input_transform(d, C, v + t * C, T * C);
      }
      for (int64_t xi = 0; xi < 16; ++xi)  // [count, C] · [C, K] for each tile position, panel by panel
        for (int64_t j = 0; j < K; j += kWinogradPanel) {
          const int64_t width = std::min(kWinogradPanel, K - j);
          product(count, width, C, v + xi * T * C, C, up + (xi * K + j) * C, width, m + xi * T * K + j, K, false);
        }
      for (int64_t t = 0; t < count; ++t) {
        scatter_output_tile(yp, H, W, K, tiles_h, tiles_w, t0 + t, out);
        output_transform(m + t * K, T * K, bp, K, out);
      }
    }
  });
  return y;
}

namespace {

// The few-tiles kernel's buffers (transformed input and products) at most, tiles permitting.
constexpr int64_t kFewTilesGroupBytes = int64_t(48) << 20;

// The few-tiles kernel (winograd_conv3x3_few_tiles) for the tile size `f` on any weight WeightTaps can describe:
// x [N, C, H, W] (made channels last) -> [N, K, H, W]. Maps of more tiles than kFewTilesGroupBytes of buffers
// hold go through in groups of tiles, each reading (and transforming) the weights again.
at::Tensor winograd_few_tiles(const at::Tensor& x_in, const WeightTaps& taps, int64_t K, const at::Tensor& bias_in,
                              const WinogradTileKernels& f, int64_t max_group_tiles = 0) {
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor y = at::empty({N, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  const at::Tensor bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : bias_in;
  const int mt = f.output_tile, alpha = f.input_tile, positions = alpha * alpha;
  const int64_t tiles_h = (H + mt - 1) / mt, tiles_w = (W + mt - 1) / mt, tiles = N * tiles_h * tiles_w;
  const int64_t group = std::min(tiles, max_group_tiles > 0 ? max_group_tiles
                                                            : std::max<int64_t>(16, kFewTilesGroupBytes / (positions * (C + K) * 4)));
  // A group's tiles transformed, position-major and in blocks of input channels: position ξ, channels
  // [c0, c0 + rows) of tile t (of the `count` in the group) at v[ξ·count·C + c0·count + t·rows]. Each product's
  // rows are then one contiguous block that the prefetchers stream; rows C floats apart, a short piece from each
  // tile, ran 1.1–1.2× slower on SD 1.5's F(4×4) layers (320 channels on 32×32, 640 on 16×16 and 32×32, 1280 on
  // 16×16; batch 2, AVX2).
  const at::Tensor v = at::empty({positions, group, C}, x.options());
  const at::Tensor m = at::empty({positions, group, K}, x.options());  // their products with the transformed weights
  const std::vector<float> zeros(C, 0.0f);
  const float* xp = x.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;

  // Work items: a panel of 32 output channels × the rows a of the α×α positions (ξ = a·α + b) it covers: up
  // to four (F(2×2): all, the weights then read once; F(4×4): 3 of 6, measured 1.1–1.4× faster than 6 or 1)
  // unless that leaves fewer than 4 items per thread (320 channels give 40 items with one row each) or its
  // products' outputs would not stay in L2. Each transforms its part of the weights a block of input channels at
  // a time (128 KiB, in cache) and multiplies every tile by it. 32 columns run gemm_f32's 3 × 32 register tile:
  // 1.3–1.4× faster here than 40 columns' 2 × 40 one, which has to load more of the weights per multiply-add
  // (AVX2, 640 channels on 16×16 maps, batch 2).
  constexpr int64_t panel_width = 32;
  const int64_t panels = (K + panel_width - 1) / panel_width, threads = at::get_num_threads();
  const auto next_divisor = [alpha](int rows) {  // the next smaller divisor of α
    do --rows;
    while (alpha % rows != 0);
    return rows;
  };
  int rows_per_item = alpha;
  while (rows_per_item > 1 && (rows_per_item > 4 || panels * (alpha / rows_per_item) < 4 * threads ||
                               group * panel_width * alpha * rows_per_item * int64_t(sizeof(float)) > (256 << 10)))
    rows_per_item = next_divisor(rows_per_item);
  const int64_t items = panels * (alpha / rows_per_item);
  const int64_t block_rows = std::min<int64_t>(C, std::max<int64_t>(32, 1024 / (alpha * rows_per_item) / 8 * 8));

  for (int64_t g0 = 0; g0 < tiles; g0 += group) {
    const int64_t count = std::min(group, tiles - g0);
    at::parallel_for(0, count, 4, [&](int64_t t0, int64_t t1) {
      const float* d[36];
      const float* d_block[36];
      for (int64_t t = t0; t < t1; ++t) {
        gather_input_tile(xp, H, W, C, tiles_h, tiles_w, g0 + t, zeros.data(), d, mt);
        for (int64_t c0 = 0; c0 < C; c0 += block_rows) {
          const int64_t rows = std::min(block_rows, C - c0);
          for (int p = 0; p < positions; ++p) d_block[p] = d[p] + c0;
          f.input_transform(d_block, rows, vp + c0 * count + t * rows, count * C);
        }
      }
    });
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min(threads, items), 1, [&](int64_t, int64_t) {
      std::vector<float> u(alpha * rows_per_item * block_rows * panel_width);  // [a, b, rows, width] of one block
      for (int64_t item = next.fetch_add(1); item < items; item = next.fetch_add(1)) {
        const int a0 = int(item % (alpha / rows_per_item)) * rows_per_item, a1 = a0 + rows_per_item;
        const int64_t k0 = item / (alpha / rows_per_item) * panel_width, width = std::min(panel_width, K - k0);
        for (int64_t c0 = 0; c0 < C; c0 += block_rows) {
          const int64_t rows = std::min(block_rows, C - c0);
          f.weight_transform_rows(taps, a0, a1, c0, rows, k0, width, u.data());
          for (int64_t xi = a0 * alpha; xi < a1 * alpha; ++xi)
            product(count, width, rows, vp + xi * count * C + c0 * count, rows,
                    u.data() + (xi - a0 * alpha) * rows * width, width, mp + xi * count * K + k0, K,
                    /*accumulate=*/c0 > 0);
        }
      }
    });
    at::parallel_for(0, count, 4, [&](int64_t t0, int64_t t1) {
      float* out[16];
      for (int64_t t = t0; t < t1; ++t) {
        scatter_output_tile(yp, H, W, K, tiles_h, tiles_w, g0 + t, out, mt);
        f.output_transform(mp + t * K, count * K, bp, K, out);
      }
    });
  }
  return y;
}

const WinogradTileKernels& tile_kernels(WinogradTile tile) {
  static const WinogradTileKernels f2x2{2, 4, input_transform, output_transform, weight_transform_rows};
  return tile == WinogradTile::f4x4 ? winograd_f4x4_kernels() : f2x2;
}

}  // namespace

at::Tensor winograd_conv3x3_few_tiles(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      WinogradTile tile, int64_t max_group_tiles) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "winograd: x must be float32 [N, C, H, W]");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.size(1) == x.size(1),
              "winograd: the weight must be float32 [K, ", x.size(1), ", 3, 3]");
  // Rows: input channels c, columns: output channels k.
  return winograd_few_tiles(x, weight_taps(weight, 1, 0, false), weight.size(0), bias, tile_kernels(tile),
                            max_group_tiles);
}

at::Tensor winograd_conv3x3_input_gradient(const at::Tensor& grad, const at::Tensor& weight, WinogradTile tile) {
  TORCH_CHECK(grad.dim() == 4 && grad.scalar_type() == at::kFloat, "winograd: the gradient must be float32 [N, K, H, W]");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3 &&
                  weight.size(0) == grad.size(1),
              "winograd: the weight must be float32 [", grad.size(1), ", C, 3, 3]");
  // dx = conv(grad, w') with w'[c, k] = w[k, c] rotated by 180°: rows are the forward's output channels k,
  // columns its input channels c, taps flipped.
  return winograd_few_tiles(grad, weight_taps(weight, 0, 1, true), weight.size(1), at::Tensor(), tile_kernels(tile));
}

}  // namespace tide::kernels
