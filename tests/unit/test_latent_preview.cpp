// The cheap latent preview: the fixed per-family linear map, checked on hand-made latents.
#include <gtest/gtest.h>

#include "tide/pipeline/latent_preview.h"
#include "tide/runtime/error.h"

namespace {
using tide::pipeline::latent_preview_rgb8;

TEST(LatentPreview, ChannelsMapToColours) {
  at::Tensor latents = at::zeros({4, 2, 3});
  EXPECT_TRUE(at::equal(latent_preview_rgb8(latents, false), at::full({2, 3, 3}, 128, at::kByte)));  // 0 -> mid grey
  latents[3].fill_(-1);  // SD's 4th channel is mostly "not blue": -1 there is blue-ish
  const at::Tensor rgb = latent_preview_rgb8(latents, false);
  EXPECT_EQ(rgb.sizes(), (at::IntArrayRef{2, 3, 3}));
  EXPECT_EQ(rgb[0][0][0].item<uint8_t>(), 155);  // (1 + 0.2120) * 127.5 = 154.5 -> 155
  EXPECT_EQ(rgb[0][0][2].item<uint8_t>(), 219);  // (1 + 0.7177) * 127.5 = 219.0
  // SDXL adds its bias; values saturate instead of wrapping.
  EXPECT_EQ(latent_preview_rgb8(at::zeros({4, 1, 1}), true)[0][0][0].item<uint8_t>(), 141);  // 1.1084 * 127.5
  EXPECT_EQ(latent_preview_rgb8(at::full({4, 1, 1}, 100.0), false)[0][0][0].item<uint8_t>(), 255);
  EXPECT_THROW(latent_preview_rgb8(at::zeros({3, 2, 2}), false), tide::Error);
}

}  // namespace
