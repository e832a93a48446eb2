#include "tide/nn/token_merging.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/record_function.h>

#include <cmath>
#include <vector>

#include "tide/kernels/matmul_f32.h"
#include "tide/runtime/optimizations.h"

namespace tide::nn {
namespace {
thread_local TokenMerging* current = nullptr;

// Every source token's similarity to every destination, a [B, S, C] · b [B, D, C]ᵀ -> [B, S, D]: oneDNN's float32
// product per batch item, where libtorch's batched matmul had taken 65–77 of a match's ~78 ms at 512 px (SD 1.5's
// first level, 2 threads of a Xeon; 22–27 ms this way).
at::Tensor similarities(const at::Tensor& a, const at::Tensor& b) {
  if (!runtime::optimizations().onednn_matmul || a.size(0) == 0 || !kernels::matmul_f32_supported(a[0], b[0].t()))
    return at::matmul(a, b.transpose(-1, -2));
  std::vector<at::Tensor> items;
  for (int64_t i = 0; i < a.size(0); ++i) items.push_back(kernels::matmul_f32(a[i], b[i].t()));  // [S, D]
  return at::stack(items);
}
}  // namespace

TokenMerging* current_token_merging() { return current; }

TokenMergingScope::TokenMergingScope(TokenMerging* merging) : previous_(current) { current = merging; }
TokenMergingScope::~TokenMergingScope() { current = previous_; }

TokenMerging::TokenMerging(const TokenMergingOptions& options, uint64_t seed)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

std::pair<at::Tensor, at::Tensor> TokenMatching::split(const at::Tensor& x) const {
  const int64_t b = x.size(0), c = x.size(2);
  return {x.gather(1, a_idx.expand({b, n_ - num_dst_, c})), x.gather(1, b_idx.expand({b, num_dst_, c}))};
}

TokenMatching TokenMerging::match(const at::Tensor& x) {
  RECORD_USER_SCOPE("tide::token_merging");  // named in `tide bench --profile`
  TokenMatching m;
  const int64_t batch = x.size(0), n = x.size(1);
  const int64_t original_tokens = height_ * width_;
  if (!options_.enabled() || n == 0 || original_tokens == 0) return m;
  // tomesd: downsample = ceil(sqrt(latent tokens // block tokens)); the block's grid is the latent's / downsample.
  const int64_t downsample = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(original_tokens / n))));
  if (downsample > options_.max_downsample) return m;
  const int64_t w = static_cast<int64_t>(std::ceil(static_cast<double>(width_) / downsample));
  const int64_t h = static_cast<int64_t>(std::ceil(static_cast<double>(height_) / downsample));
  int64_t r = static_cast<int64_t>(static_cast<double>(n) * options_.ratio);
  if (r <= 0) return m;
  const int64_t sx = options_.sx, sy = options_.sy, hsy = h / sy, wsx = w / sx;
  if (hsy * wsx == 0 || h * w != n) return m;  // a grid that does not fit the tokens: leave the block as it is

  at::NoGradGuard no_grad;
  // An odd batch cannot hold prompt and negative prompt side by side: tomesd then turns the randomness off.
  const bool use_rand = options_.use_rand && batch % 2 == 0;
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  m.rand_idx = use_rand ? at::randint(sy * sx, {hsy, wsx, 1}, generator_, i64) : at::zeros({hsy, wsx, 1}, i64);
  // -1 marks each cell's destination, 0 the sources; the argsort puts destinations first.
  at::Tensor view = at::zeros({hsy, wsx, sy * sx}, i64);
  view.scatter_(2, m.rand_idx, -at::ones_like(m.rand_idx));
  view = view.view({hsy, wsx, sy, sx}).transpose(1, 2).reshape({hsy * sy, wsx * sx});
  at::Tensor buffer = view;
  if (hsy * sy < h || wsx * sx < w) {
    buffer = at::zeros({h, w}, i64);
    buffer.narrow(0, 0, hsy * sy).narrow(1, 0, wsx * sx).copy_(view);
  }
  const at::Tensor order = buffer.reshape({1, -1, 1}).argsort(/*dim=*/int64_t(1), /*descending=*/false);
  m.num_dst_ = hsy * wsx;
  m.n_ = n;
  m.a_idx = order.narrow(1, m.num_dst_, n - m.num_dst_);  // sources
  m.b_idx = order.narrow(1, 0, m.num_dst_);               // destinations

  // Cosine similarity of every source to every destination; each source's best destination.
  // Python's metric.norm(dim=-1, keepdim=True) is linalg.vector_norm: the same reduction, the same rounding.
  const at::Tensor metric = x / at::linalg_vector_norm(x, 2, {-1}, true);
  const auto [a, b] = m.split(metric);
  const at::Tensor scores = similarities(a, b);  // [B, N - dst, dst]
  r = std::min(a.size(1), r);
  const auto [node_max, node_idx] = scores.max(-1);
  const at::Tensor edge_idx = node_max.argsort(/*dim=*/int64_t(-1), /*descending=*/true).unsqueeze(-1);
  m.unm_idx = edge_idx.narrow(1, r, edge_idx.size(1) - r);  // stay
  m.src_idx = edge_idx.narrow(1, 0, r);                     // merged away
  m.dst_idx = node_idx.unsqueeze(-1).gather(-2, m.src_idx);
  m.r_ = r;
  return m;
}

at::Tensor TokenMatching::merge(const at::Tensor& x) const {  // [B, N, C] -> [B, N - r, C]
  if (!active()) return x;
  auto [src, dst] = split(x);
  const int64_t n = src.size(0), t1 = src.size(1), c = src.size(2);
  const at::Tensor unm = src.gather(-2, unm_idx.expand({n, t1 - r_, c}));
  src = src.gather(-2, src_idx.expand({n, r_, c}));
  // tomesd's scatter_reduce(mean, include_self) is this sum and count (libtorch computes it the same way),
  // without the "scatter_reduce is in beta" warning it prints.
  const at::Tensor sums = dst.scatter_add(-2, dst_idx.expand({n, r_, c}), src);
  const at::Tensor counts = at::ones({n, dst.size(1), 1}, dst.options())
                                .scatter_add(-2, dst_idx, at::ones({n, r_, 1}, dst.options()));
  dst = sums / counts;
  return at::cat({unm, dst}, 1);
}

at::Tensor TokenMatching::unmerge(const at::Tensor& x) const {  // [B, N - r, C] -> [B, N, C]
  if (!active()) return x;
  const int64_t b = x.size(0), c = x.size(2), unm_len = unm_idx.size(1);
  const at::Tensor unm = x.narrow(1, 0, unm_len), dst = x.narrow(1, unm_len, x.size(1) - unm_len);
  const at::Tensor src = dst.gather(-2, dst_idx.expand({b, r_, c}));
  at::Tensor out = at::zeros({b, n_, c}, x.options());
  const at::Tensor a_all = a_idx.expand({b, a_idx.size(1), 1});
  out.scatter_(-2, b_idx.expand({b, num_dst_, c}), dst);
  out.scatter_(-2, a_all.gather(1, unm_idx).expand({b, unm_len, c}), unm);
  out.scatter_(-2, a_all.gather(1, src_idx).expand({b, r_, c}), src);
  return out;
}

}  // namespace tide::nn
