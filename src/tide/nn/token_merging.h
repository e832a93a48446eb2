// Token Merging for Stable Diffusion (ToMe, dbolya/tomesd): before a transformer block's self-attention the
// most similar tokens are averaged together (bipartite soft matching: one destination token per sx × sy cell,
// the r = ratio · N source tokens most similar to a destination merged into it), and copied back after it.
// Attention then runs over fewer tokens. Same choices as tomesd, draw for draw, on the same torch version.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace tide::nn {

struct TokenMergingOptions {
  double ratio = 0;          // fraction of a block's tokens merged away; 0 = off
  int max_downsample = 1;    // only blocks whose tokens are at most this much downsampled from the latent (1, 2, 4, 8)
  int sx = 2, sy = 2;        // the cell in which one destination token is chosen
  bool use_rand = true;      // choose it at random (else the top-left token); off for odd batches, as in tomesd
  bool merge_attn = true;    // around the self-attention
  bool merge_crossattn = false;
  bool merge_mlp = false;
  bool enabled() const { return ratio > 0; }
};

// One block call's matching: merge() shrinks [B, N, C] to [B, N - r, C], unmerge() restores [B, N, C].
class TokenMatching {
 public:
  bool active() const { return r_ > 0; }
  at::Tensor merge(const at::Tensor& x) const;
  at::Tensor unmerge(const at::Tensor& x) const;

  // The indices tomesd computes, for tests.
  at::Tensor rand_idx, a_idx, b_idx, unm_idx, src_idx, dst_idx;

 private:
  friend class TokenMerging;
  std::pair<at::Tensor, at::Tensor> split(const at::Tensor& x) const;
  int64_t r_ = 0, num_dst_ = 0, n_ = 0;
};

// ToMe for one generation: the options, the latent size and the one generator every merging block draws from,
// in execution order across all UNet calls. Installed on the calling thread by TokenMergingScope.
class TokenMerging {
 public:
  TokenMerging(const TokenMergingOptions& options, uint64_t seed);
  void set_latent_size(int64_t height, int64_t width) { height_ = height, width_ = width; }
  // The matching for a block whose input is x [B, N, C]; inactive when the block is too downsampled or r = 0.
  TokenMatching match(const at::Tensor& x);
  const TokenMergingOptions& options() const { return options_; }

 private:
  TokenMergingOptions options_;
  at::Generator generator_;
  int64_t height_ = 0, width_ = 0;
};

// Makes `merging` the calling thread's ToMe state until destroyed (transformer blocks read it).
class TokenMergingScope {
 public:
  explicit TokenMergingScope(TokenMerging* merging);
  ~TokenMergingScope();
  TokenMergingScope(const TokenMergingScope&) = delete;
  TokenMergingScope& operator=(const TokenMergingScope&) = delete;

 private:
  TokenMerging* previous_;
};

// The calling thread's ToMe state, or nullptr.
TokenMerging* current_token_merging();

}  // namespace tide::nn
