#include "tide/kernels/direct_conv.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "tide/kernels/gemm_cpu.h"
#include "tide/kernels/weight_taps.h"

namespace tide::kernels {
namespace {

// Output columns per task: gemm_f32's 6 × 16 register tile, whose two vectors of B stay in registers (its
// 2 × 40 tile takes B from memory for every row: 1.3–1.6× slower here). Wider tasks, which would read each
// weight row in longer runs, measured 1.2× slower (64 to 128 columns at 1280 channels on 8×8).
constexpr int64_t kPanel = 16;
// Output rows per task: the task's [rows, 16] block of the output stays in L1/L2 across all its products.
constexpr int64_t kRowBlock = 256;
// Up to this many output pixels the workers split the weight's rows rather than its columns
// (few_row_products): 1.1× the column split at 256 pixels (640 channels), alike at 512, 0.95× at 1024.
constexpr int64_t kFewRows = 256;

// Input channels per product, at most 128: the [channels, 16] block of B (8 KiB) stays in L1 while every row
// of the task passes it (64 to 512 measured alike). Equal blocks rather than a thin last one.
int64_t channel_block(int64_t channels) {
  const int64_t blocks = (channels + 127) / 128;
  return (channels + blocks - 1) / blocks;
}

// Output pixels of a convolution of x (N·H'·W'): the products' rows.
int64_t output_rows(const at::Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  return x.size(0) * ((x.size(2) + 2 * padding - kernel) / stride + 1) * ((x.size(3) + 2 * padding - kernel) / stride + 1);
}

}  // namespace

bool is_hwio(const at::Tensor& weight) {
  if (weight.dim() != 4) return false;
  const int64_t K = weight.size(0), C = weight.size(1), kw = weight.size(3);
  // A dimension of size 1 is laid out by any stride (libtorch leaves such strides as they were).
  const int64_t hwio_strides[4] = {1, K, kw * C * K, C * K};
  for (int d = 0; d < 4; ++d)
    if (weight.size(d) > 1 && weight.stride(d) != hwio_strides[d]) return false;
  return true;
}

at::Tensor to_hwio(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4, "to_hwio: the weight must be [K, C, kh, kw]");
  return weight.permute({2, 3, 1, 0}).contiguous().permute({3, 2, 0, 1});
}

bool direct_conv2d_wants_hwio(int64_t out_channels, int64_t in_channels, int64_t kernel_size) {
  // Not 1×1: oneDNN re-lays out a 1×1 weight cheaply relative to its work, and on large maps its 1×1 kernel
  // is faster (0.6–0.85× for the direct kernel at 512 → 256 channels on 128×128, 640 on 32×32).
  return gemm_f32_available() && out_channels % 8 == 0 && in_channels >= 8 && kernel_size > 1;
}

bool direct_conv2d_supported(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  if (!x.defined() || !weight.defined() || x.dim() != 4 || weight.dim() != 4) return false;
  // Any floating weight dtype: callers widen a 16-bit weight (keeping its layout) for direct_conv2d().
  if (x.scalar_type() != at::kFloat || !weight.is_floating_point()) return false;
  if (!x.device().is_cpu() || !weight.device().is_cpu()) return false;
  if (c10::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  if (stride < 1 || padding < 0 || weight.size(2) != weight.size(3) || weight.size(1) != x.size(1)) return false;
  if (x.size(2) + 2 * padding < weight.size(2) || x.size(3) + 2 * padding < weight.size(3)) return false;
  const bool readable = is_hwio(weight) || (weight.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                                             output_rows(x, weight.size(2), stride, padding) <= kFewRows);
  return readable && direct_conv2d_wants_hwio(weight.size(0), weight.size(1), weight.size(2));
}

namespace {

// B_t's block of rows [r0, r0 + depth) and columns [j0, j0 + width) (width ≤ 16) into `block` [depth, width]:
// row by row where the columns are consecutive; where the rows are (a channels-last weight's input channels)
// column by column, each column's rows a run in memory, 8×8 pieces transposed in registers.
#if defined(__x86_64__)
__attribute__((target("avx2")))
#endif
void copy_block(const WeightTaps& w, int64_t t, int64_t r0, int64_t depth, int64_t j0, int64_t width, float* block) {
  const float* b = w.base + w.tap[t] + r0 * w.row_stride + j0 * w.col_stride;  // (r, j) at b[r·row + j·col]
  if (w.col_stride == 1) {
    for (int64_t r = 0; r < depth; ++r) std::copy(b + r * w.row_stride, b + r * w.row_stride + width, block + r * width);
    return;
  }
  int64_t full_rows = 0, full_cols = 0;
#if defined(__x86_64__)
  if (w.row_stride == 1) {
    full_rows = depth / 8 * 8, full_cols = width / 8 * 8;
    for (int64_t j = 0; j < full_cols; j += 8)
      for (int64_t r = 0; r < full_rows; r += 8) {
        __m256 v[8];
        for (int jj = 0; jj < 8; ++jj) v[jj] = _mm256_loadu_ps(b + r + (j + jj) * w.col_stride);
        transpose8x8(v);  // v[rr]: row r + rr, columns j..j + 7
        for (int rr = 0; rr < 8; ++rr) _mm256_storeu_ps(block + (r + rr) * width + j, v[rr]);
      }
  }
#endif
  for (int64_t j = 0; j < width; ++j)
    for (int64_t r = j < full_cols ? full_rows : 0; r < depth; ++r)
      block[r * width + j] = b[r * w.row_stride + j * w.col_stride];
}

// out[M, N] = bias + Σ_t A_t · B_t, where row q of A_t is the `depth` floats at rows[t·M + q] and B_t is the
// weight's tap t [depth, N] with consecutive columns. Tasks: 16 output columns × up to 256 output rows. Each
// [depth block, 16] block of B is copied out of its rows, row_stride floats apart, before its products: read
// in place, rows N·4 bytes apart (a multiple of a large power of two) fall into a few cache sets and evict
// each other. (The copy costs about a fifth of the time where the rows are few, as oneDNN's re-layout does;
// prefetching the next block, into L1 or L2, in one go or spread over the products, did not shorten it.)
void indirect_products(int64_t M, int64_t N, int64_t depth, const WeightTaps& w, const std::vector<const float*>& rows,
                       const float* bias, float* out) {
  const int64_t taps = int64_t(w.tap.size());
  const int64_t row_blocks = (M + kRowBlock - 1) / kRowBlock, kc = channel_block(depth);
  const int64_t panels = (N + kPanel - 1) / kPanel, tasks = panels * row_blocks;
  // Tasks are handed out one at a time (on a shared machine a static split waits for the slowest worker), row
  // block by row block: the workers take the panels of one block of input rows together, so that those rows
  // are read from memory once, not once per panel (with few rows, the workers split the weights).
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), tasks), 1, [&](int64_t, int64_t) {
    thread_local std::vector<float> block_buffer;
    if (block_buffer.size() < size_t(kc * kPanel)) block_buffer.resize(kc * kPanel);
    float* const block = block_buffer.data();  // [kc, kPanel]
    for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      const int64_t j0 = task % panels * kPanel, width = std::min(kPanel, N - j0);
      const int64_t m0 = task / panels * kRowBlock, count = std::min(kRowBlock, M - m0);
      float* c = out + m0 * N + j0;  // [count, width] of [M, N]
      for (int64_t i = 0; i < count; ++i) {
        if (bias) std::copy(bias + j0, bias + j0 + width, c + i * N);
        else std::fill(c + i * N, c + i * N + width, 0.0f);
      }
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t k0 = 0; k0 < depth; k0 += kc) {
          const int64_t block_depth = std::min(kc, depth - k0);
          copy_block(w, t, k0, block_depth, j0, width, block);
          gemm_f32_rows(count, width, block_depth, rows.data() + t * M + m0, k0, block, width, c, N, /*accumulate=*/true);
        }
    }
  });
}

// few_row_products prefetches the weight rows' pieces this many panels ahead: the hardware prefetchers do not
// follow 128 rows read 64 bytes at a time (1280 channels on 4×4 at batch 2: 1.1–1.2× faster; 2 to 3 panels
// ahead measured alike, 6 slower, into L2 rather than L1 no faster).
constexpr int64_t kPrefetchPanels = 2;
void prefetch_panel(const float* b, int64_t rows, int64_t row_stride, bool inside) {
#if defined(__x86_64__)
  if (inside)
    for (int64_t r = 0; r < rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(b + r * row_stride), _MM_HINT_T0);
#endif
}

// The same products where the output rows are few (small maps, whose 3×3 weights are the largest): every
// weight element then feeds only M multiply-adds, so the time is that of reading the weight, and the tasks
// above read it 16 columns at a time, one 64-byte piece per row N·4 bytes apart, which the hardware
// prefetchers do not follow (4 GB/s here at 1280 channels on 4×4). Here a task is a block of up to 128 whole
// rows of one tap, read front to back (columns consecutive: an HWIO weight, or the input gradient's view of a
// channels-last one), and each worker sums its tasks' products into an [M, N] partial of its own; the
// partials are added at the end. Against the tasks above (AVX2 Zen 2, 2 threads): 2.4–2.5× at 1280 channels
// on 4×4 at batch 2, 1.4–1.9× on 8×8. Where the rows are the consecutive ones (a channels-last weight
// forward), the tasks above already read each column panel's runs one after another.
// Each tap's products take only the output pixels whose input pixel is inside the map (`rows` points at
// `zero_row` for the others): on small maps the padding is a large share, 31% of a 3×3 kernel's products on
// 4×4 and 16% on 8×8, and leaving it out gives the same sums (it added zeros).
void few_row_products(int64_t M, int64_t N, int64_t depth, const WeightTaps& w, const std::vector<const float*>& rows,
                      const float* zero_row, const float* bias, float* out) {
  const int64_t taps = int64_t(w.tap.size());
  // Per tap, its output pixels inside the map: their input rows and their rows of the output, packed.
  std::vector<const float*> tap_rows(taps * M);
  std::vector<int64_t> tap_out_rows(taps * M), tap_count(taps, 0);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t q = 0; q < M; ++q)
      if (rows[t * M + q] != zero_row) {
        tap_rows[t * M + tap_count[t]] = rows[t * M + q];
        tap_out_rows[t * M + tap_count[t]++] = q;
      }
  // Tasks of as many weight rows as there are output rows, 32 to 128: with fewer output rows a panel's products
  // are shorter, and fewer rows in flight keep its reads ahead of them (1280 channels on 4×4 at batch 2: 32 rows
  // 1.2× faster than 128; on 8×8, 128 rows 1.07× faster than 64).
  const int64_t task_rows = std::clamp<int64_t>(M, 32, 128);
  const int64_t blocks = (depth + task_rows - 1) / task_rows, block_rows = (depth + blocks - 1) / blocks;
  const int64_t tasks = taps * blocks;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), tasks);
  std::vector<float> partials(workers * M * N, 0.0f);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t worker, int64_t) {
    float* const partial = partials.data() + worker * M * N;
    for (int64_t task = next.fetch_add(1); task < tasks; task = next.fetch_add(1)) {
      const int64_t t = task / blocks, r0 = task % blocks * block_rows, depth_here = std::min(block_rows, depth - r0);
      const float* b = w.base + w.tap[t] + r0 * w.row_stride;  // element (r, j) at b[r·row_stride + j]
      for (int64_t j0 = 0; j0 < N; j0 += kPanel) {
        prefetch_panel(b + j0 + kPrefetchPanels * kPanel, depth_here, w.row_stride, j0 + kPrefetchPanels * kPanel < N);
        gemm_f32_rows(tap_count[t], std::min(kPanel, N - j0), depth_here, tap_rows.data() + t * M, r0, b + j0,
                      w.row_stride, partial + j0, N, /*accumulate=*/true, /*allow_avx512=*/true,
                      tap_out_rows.data() + t * M);
      }
    }
  });
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q)
      for (int64_t j = 0; j < N; ++j) {
        float sum = bias ? bias[j] : 0.0f;
        for (int64_t worker = 0; worker < workers; ++worker) sum += partials[(worker * M + q) * N + j];
        out[q * N + j] = sum;
      }
  });
}

// conv(x, the weight `w` describes, bias) -> [N, K, H', W'] channels last: the rows table, then the products.
at::Tensor conv_products(const at::Tensor& x_in, const WeightTaps& w, int64_t K, int64_t kernel, const at::Tensor& bias_in,
                         int64_t stride, int64_t padding) {
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = (H + 2 * padding - kernel) / stride + 1, Wo = (W + 2 * padding - kernel) / stride + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "direct_conv2d: the kernel is larger than the padded input");
  at::Tensor y = at::empty({N, K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  const at::Tensor bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : bias_in;

  // rows[t·M + q]: the input pixel that kernel tap t multiplies for output pixel q, or a zero row where the
  // tap falls in the padding.
  const int64_t M = N * Ho * Wo, taps = kernel * kernel;
  const std::vector<float> zeros(C, 0.0f);
  std::vector<const float*> rows(taps * M);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, M, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / (Ho * Wo), oy = q / Wo % Ho, ox = q % Wo;
      for (int64_t dy = 0; dy < kernel; ++dy)
        for (int64_t dx = 0; dx < kernel; ++dx) {
          const int64_t iy = oy * stride - padding + dy, ix = ox * stride - padding + dx;
          rows[(dy * kernel + dx) * M + q] =
              iy >= 0 && iy < H && ix >= 0 && ix < W ? xp + ((n * H + iy) * W + ix) * C : zeros.data();
        }
    }
  });
  const float* const bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (M <= kFewRows && w.col_stride == 1) few_row_products(M, K, C, w, rows, zeros.data(), bias_data, y.data_ptr<float>());
  else indirect_products(M, K, C, w, rows, bias_data, y.data_ptr<float>());
  return y;
}

}  // namespace

at::Tensor direct_conv2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t stride,
                         int64_t padding) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "direct_conv2d: x must be float32 [N, C, H, W]");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 4 && weight.size(1) == x.size(1) &&
                  weight.size(2) == weight.size(3),
              "direct_conv2d: the weight must be float32 [K, ", x.size(1), ", k, k]");
  TORCH_CHECK(gemm_f32_available(), "direct_conv2d: needs a CPU with AVX2 and FMA");
  const int64_t kernel = weight.size(2);
  TORCH_CHECK(is_hwio(weight) || weight.is_contiguous(at::MemoryFormat::ChannelsLast),
              "direct_conv2d: the weight must be HWIO or channels last");
  // Rows: input channels c; columns: output channels k.
  return conv_products(x, weight_taps(weight, 1, 0, false), weight.size(0), kernel, bias, stride, padding);
}

bool direct_conv2d_preferred(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  return output_rows(x, weight.size(2), stride, padding) <= kFewRows &&
         weight.numel() * int64_t(sizeof(float)) > (int64_t(16) << 20);
}

bool direct_conv2d_input_gradient_supported(const at::Tensor& grad, const at::Tensor& weight, int64_t stride,
                                            int64_t padding) {
  if (!grad.defined() || !weight.defined() || grad.dim() != 4 || weight.dim() != 4) return false;
  if (grad.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat) return false;
  if (!grad.device().is_cpu() || !weight.device().is_cpu() || !gemm_f32_available()) return false;
  const int64_t kernel = weight.size(2);
  if (stride != 1 || weight.size(3) != kernel || kernel % 2 == 0 || padding != kernel / 2) return false;
  if (weight.size(0) != grad.size(1) || weight.size(0) < 8 || weight.size(1) % 8 != 0) return false;
  // Read in place: rows (the forward's output channels) consecutive in an HWIO weight, columns (its input
  // channels) in a channels-last one; a gradient of few pixels only, where the weight's reading dominates.
  return (is_hwio(weight) || weight.is_contiguous(at::MemoryFormat::ChannelsLast)) &&
         output_rows(grad, kernel, 1, padding) <= kFewRows;
}

at::Tensor direct_conv2d_input_gradient(const at::Tensor& grad, const at::Tensor& weight, int64_t padding) {
  TORCH_CHECK(direct_conv2d_input_gradient_supported(grad, weight, 1, padding),
              "direct_conv2d_input_gradient: needs a float32 gradient of at most ", kFewRows,
              " pixels, a float32 HWIO or channels-last weight [", grad.dim() == 4 ? grad.size(1) : -1,
              ", C, k, k] (k odd, padding k / 2, C a multiple of 8) and a CPU with AVX2 and FMA");
  // dx = conv(grad, w') with w'[c, k] = w[k, c] rotated by 180°: rows are the forward's output channels k,
  // columns its input channels c, taps flipped; same padding, so dx has grad's size.
  return conv_products(grad, weight_taps(weight, 0, 1, true), weight.size(1), weight.size(2), at::Tensor(), 1, padding);
}

}  // namespace tide::kernels
