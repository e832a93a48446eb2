// Progress previews: the fixed per-family linear map, checked on hand-made latents, and the server's live
// previews through a tiny autoencoder.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/pipeline/latent_preview.h"
#include "tide/runtime/error.h"
#include "tide/server/latent_preview.h"
#include "tide/server/live_previews.h"
#include "tiny_pipeline.h"

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

// The family with a tiny autoencoder gets its full-size decode of the first image, once per step; the other
// family the linear picture at the latent's size.
TEST(LivePreviews, DecodeEachStepOnceWithTheFamilysDecoder) {
  tide::testing::TempDir dir;
  const auto folder = tide::testing::make_tiny_taesd(dir.path() / "taesd", 3);
  tide::server::LivePreviews previews(folder, "");
  EXPECT_TRUE(previews.decodes(false));
  EXPECT_FALSE(previews.decodes(true));
  auto taesd = tide::models::load_autoencoder_tiny(folder);

  tide::server::ProgressSnapshot p;
  EXPECT_EQ(previews.png(p), "");  // nothing running
  p.active = true;
  p.job_id = "job-1";
  p.step = 1;
  EXPECT_EQ(previews.png(p), "");  // running, no step done yet
  p.latents = at::randn({2, 4, 8, 8}, at::make_generator<at::CPUGeneratorImpl>(5));
  at::Tensor expected;
  {
    c10::InferenceMode inference;
    expected = tide::io::to_rgb8(taesd->decode(p.latents.narrow(0, 0, 1)))[0];
  }
  const at::Tensor first = tide::io::decode_png(previews.png(p)).rgb8;
  EXPECT_EQ(first.sizes(), (at::IntArrayRef{16, 16, 3}));  // full size: factor 2
  EXPECT_TRUE(at::equal(first, expected));

  // Another poll in the same step shows the same picture (not decoded again); the next step a new one.
  const at::Tensor step_one_latents = p.latents;
  p.latents = -step_one_latents;
  EXPECT_TRUE(at::equal(tide::io::decode_png(previews.png(p)).rgb8, first));
  p.step = 2;
  EXPECT_FALSE(at::equal(tide::io::decode_png(previews.png(p)).rgb8, first));

  p.xl = true;  // no SDXL decoder given: the linear picture
  const at::Tensor linear = tide::io::decode_png(previews.png(p)).rgb8;
  EXPECT_TRUE(at::equal(linear, tide::server::latent_preview(p.latents, true)));
  EXPECT_EQ(linear.sizes(), (at::IntArrayRef{8, 8, 3}));

  EXPECT_THROW(tide::server::LivePreviews(dir.path() / "missing", ""), tide::Error);
}

}  // namespace
