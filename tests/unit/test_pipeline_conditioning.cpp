// Conditioning made once, then the text encoders released, the UNet after the loop, and the VAE read only when
// it decodes (tide generate's one-shot path): the same images as generate(request), and clear errors for what
// can no longer be done.
#include <gtest/gtest.h>

#include "test_support.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/error.h"
#include "tiny_pipeline.h"

namespace {

TEST(PipelineConditioning, ReleasedTextEncodersGiveTheSameImagesAndClearErrors) {
  tide::testing::TempDir dir;
  tide::testing::make_tiny_pipeline(dir.path() / "model");
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_folder(dir.path() / "model");
  tide::pipeline::GenerationRequest request;
  request.prompt = "a red robot";
  request.negative_prompt = "blurry";
  request.width = request.height = 16;
  request.steps = 2;
  request.seed = 3;
  request.num_images = 2;
  const auto expected = pipe->generate(request);

  const auto conditioning = pipe->condition(request);
  EXPECT_EQ(conditioning.context.size(0), 4);  // [uncond × 2, cond × 2]
  pipe->release_text_encoders();
  const auto got = pipe->generate(request, conditioning);
  EXPECT_TRUE(at::equal(got.latents, expected.latents));
  EXPECT_TRUE(at::equal(got.images, expected.images));

  try {
    pipe->generate(request);
    FAIL() << "encoded a prompt without text encoders";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("text encoders were released"), std::string::npos) << e.what();
  }
  tide::pipeline::GenerationRequest other = request;
  other.num_images = 1;
  try {
    pipe->generate(other, conditioning);
    FAIL() << "conditioning for 2 images accepted for 1";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("this request needs 2"), std::string::npos) << e.what();
  }

  // The UNet freed once the loop is done: the same images, then no more generations.
  pipe->release_unet_after_denoising();
  const auto last = pipe->generate(request, conditioning);
  EXPECT_TRUE(at::equal(last.images, expected.images));
  EXPECT_FALSE(static_cast<bool>(pipe->unet()));
  try {
    pipe->generate(request, conditioning);
    FAIL() << "generated without a UNet";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("UNet was released"), std::string::npos) << e.what();
  }
}

TEST(PipelineConditioning, AVaeLoadedOnFirstUseGivesTheSameImagesAndIsReadOnlyThen) {
  tide::testing::TempDir dir;
  tide::testing::make_tiny_pipeline(dir.path() / "model");
  tide::pipeline::GenerationRequest request;
  request.prompt = "a red robot";
  request.width = request.height = 16;
  request.steps = 2;
  request.seed = 5;
  auto eager = tide::pipeline::StableDiffusionPipeline::from_folder(dir.path() / "model");
  const auto expected = eager->generate(request);

  auto parts = tide::pipeline::parts_from_folder(dir.path() / "model");
  parts.load_vae_on_first_use = true;
  auto pipe = tide::pipeline::StableDiffusionPipeline::from_parts(std::move(parts));
  EXPECT_EQ(pipe->vae_architecture().config().latent_channels, 4);
  const auto got = pipe->generate(request);
  EXPECT_TRUE(at::equal(got.images, expected.images));
  const auto eager_weights = eager->vae()->named_parameters(), weights = pipe->vae()->named_parameters();
  ASSERT_EQ(weights.size(), eager_weights.size());
  for (const auto& w : eager_weights) EXPECT_TRUE(at::equal(weights[w.key()], w.value())) << w.key();

  // Weights that cannot be read fail when the VAE is first needed, not before.
  auto broken = tide::pipeline::parts_from_folder(dir.path() / "model");
  broken.weights.at("vae") = tide::io::WeightSource();
  broken.load_vae_on_first_use = true;
  auto late = tide::pipeline::StableDiffusionPipeline::from_parts(std::move(broken));
  const auto conditioning = late->condition(request);
  try {
    late->generate(request, conditioning);
    FAIL() << "decoded with a VAE whose weights are missing";
  } catch (const tide::Error& e) {
    EXPECT_NE(std::string(e.what()).find("vae"), std::string::npos) << e.what();
  }
}

}  // namespace
