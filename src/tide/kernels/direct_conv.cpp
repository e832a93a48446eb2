#include "tide/kernels/direct_conv.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "tide/kernels/gemm_cpu.h"

namespace tide::kernels {
namespace {

// Output columns per task: gemm_f32's 6 × 16 register tile, whose two vectors of B stay in registers (its
// 2 × 40 tile takes B from memory for every row: 1.3–1.6× slower here). Wider tasks, which would read each
// weight row in longer runs, measured 1.2× slower (64 to 128 columns at 1280 channels on 8×8).
constexpr int64_t kPanel = 16;
// Output rows per task: the task's [rows, 16] block of the output stays in L1/L2 across all its products.
constexpr int64_t kRowBlock = 256;

// Input channels per product, at most 128: the [channels, 16] block of B (8 KiB) stays in L1 while every row
// of the task passes it (64 to 512 measured alike). Equal blocks rather than a thin last one.
int64_t channel_block(int64_t channels) {
  const int64_t blocks = (channels + 127) / 128;
  return (channels + blocks - 1) / blocks;
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
  return is_hwio(weight) && direct_conv2d_wants_hwio(weight.size(0), weight.size(1), weight.size(2));
}

namespace {

// out[M, N] = bias + Σ_t A_t · B_t, where row q of A_t is the `depth` floats at rows[t·M + q] and B_t is
// weight[t] [depth, N] (row-major). Tasks: 16 output columns × up to 256 output rows. Each [depth block, 16]
// block of B is copied out of its rows, N floats apart, before its products: read in place, rows N·4 bytes
// apart (a multiple of a large power of two) fall into a few cache sets and evict each other. (The copy costs
// about a fifth of the time where the rows are few, as oneDNN's re-layout does; prefetching the next block,
// into L1 or L2, in one go or spread over the products, did not shorten it.)
void indirect_products(int64_t M, int64_t N, int64_t depth, int64_t taps, const std::vector<const float*>& rows,
                       const float* weight, const float* bias, float* out) {
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
          const float* b = weight + (t * depth + k0) * N + j0;
          for (int64_t r = 0; r < block_depth; ++r) std::copy(b + r * N, b + r * N + width, block + r * width);
          gemm_f32_rows(count, width, block_depth, rows.data() + t * M + m0, k0, block, width, c, N, /*accumulate=*/true);
        }
    }
  });
}

}  // namespace

at::Tensor direct_conv2d(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& bias_in, int64_t stride,
                         int64_t padding) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat, "direct_conv2d: x must be float32 [N, C, H, W]");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && is_hwio(weight) && weight.size(1) == x_in.size(1),
              "direct_conv2d: the weight must be float32 HWIO for ", x_in.size(1), " input channels");
  TORCH_CHECK(gemm_f32_available(), "direct_conv2d: needs a CPU with AVX2 and FMA");
  const at::Tensor x = x_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  const int64_t Ho = (H + 2 * padding - kh) / stride + 1, Wo = (W + 2 * padding - kw) / stride + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "direct_conv2d: the kernel is larger than the padded input");
  at::Tensor y = at::empty({N, K, Ho, Wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  const at::Tensor bias = bias_in.defined() ? bias_in.to(at::kFloat).contiguous() : bias_in;

  // rows[t·M + q]: the input pixel that kernel tap t multiplies for output pixel q, or a zero row where the
  // tap falls in the padding.
  const int64_t M = N * Ho * Wo, taps = kh * kw;
  const std::vector<float> zeros(C, 0.0f);
  std::vector<const float*> rows(taps * M);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, M, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / (Ho * Wo), oy = q / Wo % Ho, ox = q % Wo;
      for (int64_t dy = 0; dy < kh; ++dy)
        for (int64_t dx = 0; dx < kw; ++dx) {
          const int64_t iy = oy * stride - padding + dy, ix = ox * stride - padding + dx;
          rows[(dy * kw + dx) * M + q] =
              iy >= 0 && iy < H && ix >= 0 && ix < W ? xp + ((n * H + iy) * W + ix) * C : zeros.data();
        }
    }
  });
  // B_t: the HWIO weight's [C, K] slice for tap t.
  indirect_products(M, K, C, taps, rows, weight.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
                    y.data_ptr<float>());
  return y;
}

}  // namespace tide::kernels
