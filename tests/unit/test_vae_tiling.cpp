// Tiled VAE decode (diffusers' AutoencoderKL.enable_tiling / tiled_decode) on a tiny random VAE: when it
// tiles, that a latent within one tile decodes exactly as untiled, that a large latent keeps its shape and
// stays close to the untiled decode, and that the overlaps are diffusers' linear blends of the tiles.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_support.h"
#include "tide/models/autoencoder_kl.h"
#include "tide/nn/layers.h"
#include "tide/runtime/error.h"

namespace {

using tide::models::AutoencoderKL;
using tide::models::AutoencoderKLConfig;
using tide::models::VaeTiling;

// 2 levels (f = 2). sample_size 32: tiles of 32 px = 16 latents, a new tile every 12 latents, 8 px blended,
// 24 px of each tile kept.
AutoencoderKL tiny_vae(int64_t sample_size = 32) {
  at::manual_seed(0);
  return AutoencoderKL(AutoencoderKLConfig::from_json({{"block_out_channels", {32, 64}},
                                                       {"down_block_types", {"DownEncoderBlock2D", "DownEncoderBlock2D"}},
                                                       {"up_block_types", {"UpDecoderBlock2D", "UpDecoderBlock2D"}},
                                                       {"latent_channels", 4},
                                                       {"layers_per_block", 1},
                                                       {"norm_num_groups", 32},
                                                       {"sample_size", sample_size}}));
}

// diffusers' blend_v / blend_h as written there, row (column) by row, into `b`.
void reference_blend(const at::Tensor& a, at::Tensor& b, int64_t dim, int64_t blend_extent) {
  const int64_t e = std::min({a.size(dim), b.size(dim), blend_extent});
  for (int64_t y = 0; y < e; ++y)
    b.select(dim, y).copy_(a.select(dim, a.size(dim) - e + y) * (1 - double(y) / e) + b.select(dim, y) * (double(y) / e));
}

// diffusers' tiled_decode transcribed: decode every tile (untiled decode of the slice), then blend each with
// the (already blended) tile above and to the left, crop, and concatenate.
at::Tensor reference_tiled_decode(AutoencoderKL& vae, const at::Tensor& z) {
  const int64_t tile = 16, stride = 12, extent = 8, row_limit = 24;
  std::vector<std::vector<at::Tensor>> rows;
  for (int64_t i = 0; i < z.size(2); i += stride) {
    rows.emplace_back();
    for (int64_t j = 0; j < z.size(3); j += stride)
      rows.back().push_back(vae->decode(z.slice(2, i, i + tile).slice(3, j, j + tile).contiguous()));
  }
  std::vector<at::Tensor> result_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<at::Tensor> result_row;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      at::Tensor& t = rows[i][j];
      if (i > 0) reference_blend(rows[i - 1][j], t, 2, extent);
      if (j > 0) reference_blend(rows[i][j - 1], t, 3, extent);
      result_row.push_back(t.slice(2, 0, row_limit).slice(3, 0, row_limit));
    }
    result_rows.push_back(at::cat(result_row, 3));
  }
  return at::cat(result_rows, 2);
}

TEST(VaeTiling, ParsesTheThreeChoices) {
  EXPECT_EQ(tide::models::parse_vae_tiling("off"), VaeTiling::kOff);
  EXPECT_EQ(tide::models::parse_vae_tiling("on"), VaeTiling::kOn);
  EXPECT_EQ(tide::models::parse_vae_tiling("auto"), VaeTiling::kAuto);
  for (VaeTiling t : {VaeTiling::kOff, VaeTiling::kOn, VaeTiling::kAuto})
    EXPECT_EQ(tide::models::parse_vae_tiling(tide::models::vae_tiling_name(t)), t);
  try {
    tide::models::parse_vae_tiling("bogus");
    FAIL() << "no tide::Error";
  } catch (const tide::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'bogus'"), std::string::npos) << message;
    EXPECT_NE(message.find("auto, on or off"), std::string::npos) << message;
  }
}

// Tile sizes from the config as diffusers derives them, and when each choice tiles: On as diffusers'
// use_tiling (latent larger than one tile), Auto only above 1 MP, so the default sizes never tile.
TEST(VaeTiling, TileSizesAndWhenEachChoiceTiles) {
  struct Case {
    const char* preset;
    int64_t tile_px, tile_latent, stride, blend;
  };
  for (const Case& c : {Case{"sd15", 512, 64, 48, 128}, Case{"sd21", 768, 96, 72, 192}, Case{"sdxl", 1024, 128, 96, 256}}) {
    SCOPED_TRACE(c.preset);
    tide::nn::NoInitGuard no_init;  // sizes only: no random weights for 80M parameters
    AutoencoderKL vae(AutoencoderKLConfig::preset(c.preset));
    EXPECT_EQ(vae->tile_sample_size(), c.tile_px);
    EXPECT_EQ(vae->tile_latent_size(), c.tile_latent);
    EXPECT_EQ(vae->tile_stride(), c.stride);
    EXPECT_EQ(vae->blend_extent(), c.blend);
    auto tiles = [&](int64_t height_px, int64_t width_px, VaeTiling t) { return vae->tiles(height_px / 8, width_px / 8, t); };
    // The family's default size fits in one tile: never tiled.
    for (VaeTiling t : {VaeTiling::kOff, VaeTiling::kOn, VaeTiling::kAuto}) EXPECT_FALSE(tiles(c.tile_px, c.tile_px, t));
    // One latent more than a tile in one direction: On tiles, Auto only above 1 MP.
    EXPECT_TRUE(tiles(c.tile_px, c.tile_px + 8, VaeTiling::kOn));
    EXPECT_FALSE(tiles(c.tile_px, c.tile_px + 8, VaeTiling::kOff));
    EXPECT_EQ(tiles(c.tile_px, c.tile_px + 8, VaeTiling::kAuto), c.tile_px * (c.tile_px + 8) > 1024 * 1024);
    // 1024x1024 is not above the threshold, 1024x1032 is; SDXL's 832x1216 bucket is not.
    EXPECT_FALSE(tiles(1024, 1024, VaeTiling::kAuto));
    EXPECT_TRUE(tiles(1024, 1032, VaeTiling::kAuto));
    EXPECT_FALSE(tiles(832, 1216, VaeTiling::kAuto));
    EXPECT_TRUE(tiles(832, 1216, VaeTiling::kOn));
    EXPECT_TRUE(tiles(2048, 2048, VaeTiling::kAuto));
    EXPECT_FALSE(tiles(2048, 2048, VaeTiling::kOff));
  }
}

TEST(VaeTiling, LatentWithinOneTileDecodesExactlyUntiled) {
  torch::NoGradGuard no_grad;
  AutoencoderKL vae = tiny_vae();
  for (const auto& shape : {std::vector<int64_t>{2, 4, 16, 16}, std::vector<int64_t>{1, 4, 16, 10}}) {
    const at::Tensor z = at::randn(shape);
    const at::Tensor untiled = vae->decode(z);
    EXPECT_TRUE(at::equal(vae->decode(z, VaeTiling::kOn), untiled));
    EXPECT_TRUE(at::equal(vae->decode(z, VaeTiling::kAuto), untiled));
  }
}

TEST(VaeTiling, LargeLatentKeepsShapeAndStaysCloseToUntiled) {
  torch::NoGradGuard no_grad;
  // Tiles of 64 px = 32 latents (a new one every 24 latents, 16 px blended): with smaller tiles most pixels
  // would be near a tile border, where the decoder's zero padding differs from the untiled decode.
  AutoencoderKL vae = tiny_vae(64);
  ASSERT_EQ(vae->tile_latent_size(), 32);
  const at::Tensor z = at::randn({1, 4, 80, 72});  // 2.5 x 2.25 tiles: 3 x 3 tiles, the last ones partial
  const at::Tensor untiled = vae->decode(z, VaeTiling::kOff);
  const at::Tensor tiled = vae->decode(z, VaeTiling::kOn);
  ASSERT_EQ(tiled.sizes(), (at::IntArrayRef{1, 3, 160, 144}));
  EXPECT_TRUE(tiled.isfinite().all().item<bool>());
  EXPECT_TRUE(tiled.is_contiguous());
  EXPECT_TRUE(at::equal(vae->tiled_decode(z), tiled));
  // 160x144 px is far below Auto's 1 MP: untiled.
  EXPECT_TRUE(at::equal(vae->decode(z, VaeTiling::kAuto), untiled));

  // Each tile has its own GroupNorm statistics, attends only within itself and is zero-padded at its
  // borders, so the output moves. Measured with this seed: max |tiled - untiled| = 0.391, mean 0.0352,
  // against a mean |untiled| of 0.263; the decode of an unrelated latent differs by a mean of 0.360 (10x
  // more), so a misplaced or missing tile would show. The bounds leave about 2x margin. (Random weights
  // are a harsh case: with 32 px tiles the mean difference is 0.088, with 128 px ones 0.016.)
  const double max_diff = tide::testing::max_abs_diff(tiled, untiled);
  const double mean_diff = (tiled - untiled).abs().mean().item<double>();
  const double unrelated = (vae->decode(at::randn_like(z)) - untiled).abs().mean().item<double>();
  const std::string numbers = "max diff " + std::to_string(max_diff) + ", mean diff " + std::to_string(mean_diff) +
                              ", mean |untiled| " + std::to_string(untiled.abs().mean().item<double>()) +
                              ", unrelated latent: mean diff " + std::to_string(unrelated);
  EXPECT_GT(max_diff, 0) << "tiling changed nothing";
  EXPECT_LE(max_diff, 0.8) << numbers;
  EXPECT_LE(mean_diff, 0.07) << numbers;
  EXPECT_LE(mean_diff, 0.2 * unrelated) << numbers;
}

// One row of three tiles along the width (columns 0-15, 12-27, 24-27 of the latent): the output keeps
// tile 0's first 24 px, then tile 1 whose first 8 px fade from tile 0's last 8 px to its own
// (x = 0..7: t0[24 + x]·(1 - x/8) + t1[x]·(x/8)), then tile 2 faded in from the blended tile 1.
TEST(VaeTiling, OverlapColumnsAreLinearBlendsOfTheTwoTiles) {
  torch::NoGradGuard no_grad;
  AutoencoderKL vae = tiny_vae();
  const at::Tensor z = at::randn({1, 4, 12, 28});
  const at::Tensor out = vae->decode(z, VaeTiling::kOn);  // [1, 3, 24, 56]
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{1, 3, 24, 56}));
  const at::Tensor t0 = vae->decode(z.slice(3, 0, 16).contiguous());   // [1, 3, 24, 32]
  const at::Tensor t1 = vae->decode(z.slice(3, 12, 28).contiguous());  // [1, 3, 24, 32]
  const at::Tensor t2 = vae->decode(z.slice(3, 24, 28).contiguous());  // [1, 3, 24, 8]
  // The decodes of the tiles alone and inside the tiled decode agree to float rounding (in practice
  // bit for bit; 1e-6 only allows a different convolution algorithm for a sliced input).
  const double tol = 1e-6;
  EXPECT_TENSOR_NEAR(out.slice(3, 0, 24), t0.slice(3, 0, 24), tol);
  at::Tensor t1_blended = t1.clone();
  for (int64_t x = 0; x < 8; ++x) {
    const at::Tensor expected = t0.select(3, 24 + x) * (1 - x / 8.0) + t1.select(3, x) * (x / 8.0);
    EXPECT_TENSOR_NEAR(out.select(3, 24 + x), expected, tol);
    t1_blended.select(3, x).copy_(expected);
    // Not trivially one of the two tiles, except where the weight is 0.
    if (x > 0) {
      EXPECT_GT(tide::testing::max_abs_diff(out.select(3, 24 + x), t0.select(3, 24 + x)), 1e-4) << x;
      EXPECT_GT(tide::testing::max_abs_diff(out.select(3, 24 + x), t1.select(3, x)), 1e-4) << x;
    }
  }
  EXPECT_TENSOR_NEAR(out.slice(3, 32, 48), t1.slice(3, 8, 24), tol);
  for (int64_t x = 0; x < 8; ++x)
    EXPECT_TENSOR_NEAR(out.select(3, 48 + x),
                       t1_blended.select(3, 24 + x) * (1 - x / 8.0) + t2.select(3, x) * (x / 8.0), tol);
}

// The whole output against diffusers' algorithm transcribed (tiles blended with blended neighbours,
// partial last tiles, batch > 1), vertically, horizontally and on a grid.
TEST(VaeTiling, MatchesDiffusersTiledDecodeTranscribed) {
  torch::NoGradGuard no_grad;
  AutoencoderKL vae = tiny_vae();
  for (const auto& shape : {std::vector<int64_t>{1, 4, 28, 12}, std::vector<int64_t>{1, 4, 12, 28},
                            std::vector<int64_t>{2, 4, 28, 41}, std::vector<int64_t>{1, 4, 17, 17}}) {
    SCOPED_TRACE(::testing::PrintToString(shape));
    const at::Tensor z = at::randn(shape);
    const at::Tensor tiled = vae->decode(z, VaeTiling::kOn);
    ASSERT_EQ(tiled.sizes(), (at::IntArrayRef{shape[0], 3, 2 * shape[2], 2 * shape[3]}));
    EXPECT_TENSOR_NEAR(tiled, reference_tiled_decode(vae, z), 1e-6);
  }
}

TEST(VaeTiling, BadLatentsThrow) {
  torch::NoGradGuard no_grad;
  AutoencoderKL vae = tiny_vae();
  EXPECT_THROW(vae->tiled_decode(at::randn({1, 3, 40, 40})), tide::Error);
  EXPECT_THROW(vae->decode(at::randn({4, 40, 40}), VaeTiling::kOn), tide::Error);
}

}  // namespace
