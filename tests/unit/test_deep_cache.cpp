// DeepCache on a tiny random UNet: a cached call on unchanged deep features equals the full call, the
// pipeline reuses features only between full calls, and interval 1 is the plain run.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include "test_support.h"
#include "tiny_pipeline.h"
#include "tide/models/deep_cache.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
using namespace tide;

class DeepCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new tide::testing::TempDir();
    tide::testing::make_tiny_pipeline(dir_->path() / "model");
    pipe_ = pipeline::StableDiffusionPipeline::from_folder(dir_->path() / "model").release();
  }
  static void TearDownTestSuite() {
    delete pipe_;
    delete dir_;
  }
  static inline tide::testing::TempDir* dir_ = nullptr;
  static inline pipeline::StableDiffusionPipeline* pipe_ = nullptr;
};

TEST_F(DeepCacheTest, ACachedCallOnUnchangedFeaturesEqualsTheFullCall) {
  c10::InferenceMode inference;
  auto& unet = pipe_->unet();
  const at::Tensor sample = at::randn({2, 4, 8, 12});
  const at::Tensor context = at::randn({2, 77, 16});
  models::DeepCache cache(3);
  models::DeepCacheScope scope(&cache);
  cache.begin_call(0);
  EXPECT_FALSE(cache.reuse());
  const at::Tensor full = unet->forward(sample, 500, context);
  ASSERT_TRUE(cache.features().defined());
  cache.begin_call(1);
  ASSERT_TRUE(cache.reuse());
  // Same input, same timestep: the kept features are what a full call would compute, so the cached call (only
  // conv_in, the last layer and the head) must give the same output.
  EXPECT_TRUE(at::allclose(unet->forward(sample, 500, context), full, 1e-5, 1e-6));
  // Another timestep: the deep features are stale, the output an approximation of the full call.
  const at::Tensor cached = unet->forward(sample, 300, context);
  cache.begin_call(3);
  EXPECT_FALSE(cache.reuse());
  const at::Tensor refreshed = unet->forward(sample, 300, context);
  EXPECT_FALSE(at::equal(cached, refreshed));
  EXPECT_TRUE(at::equal(refreshed, [&] {
    models::DeepCacheScope none(nullptr);
    return unet->forward(sample, 300, context);
  }()));
}

TEST_F(DeepCacheTest, PipelineIntervals) {
  pipeline::GenerationRequest r;
  r.prompt = "a red robot";
  r.steps = 6;
  r.seed = 4;
  r.width = r.height = 32;
  const auto plain = pipe_->generate(r);
  r.cache_interval = 1;
  EXPECT_TRUE(at::equal(pipe_->generate(r).latents, plain.latents));
  r.cache_interval = 3;
  std::vector<at::Tensor> steps;
  const auto cached = pipe_->generate(r, [&](const pipeline::StepInfo& s) { steps.push_back(s.latents.clone()); });
  EXPECT_EQ(cached.unet_calls, plain.unet_calls);
  EXPECT_FALSE(at::equal(cached.latents, plain.latents));
  // The first call is a full one: the first step equals the uncached run's.
  std::vector<at::Tensor> plain_steps;
  r.cache_interval = 1;
  pipe_->generate(r, [&](const pipeline::StepInfo& s) { plain_steps.push_back(s.latents.clone()); });
  EXPECT_TRUE(at::equal(steps[0], plain_steps[0]));
  EXPECT_FALSE(at::equal(steps[1], plain_steps[1]));
  r.cache_interval = 0;
  EXPECT_THROW(pipe_->generate(r), Error);
}

}  // namespace
