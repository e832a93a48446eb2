// Two pipelines with different compute settings, run at the same time in two threads of one process,
// give exactly what each gives alone: a pipeline's settings are its own, not the process's.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "test_support.h"
#include "tide/bench/cpu_hog.h"
#include "tide/pipeline/stable_diffusion.h"
#include "tide/runtime/load_aware_threads.h"
#include "tide/runtime/threads.h"
#include "tiny_pipeline.h"

namespace {
using tide::pipeline::GenerationRequest;
using tide::pipeline::StableDiffusionPipeline;

GenerationRequest request_with_seed(uint64_t seed) {
  GenerationRequest r;
  r.prompt = "a lighthouse on a cliff";
  r.negative_prompt = "fog";
  r.width = r.height = 32;
  r.steps = 3;
  r.seed = seed;
  r.scheduler = "euler-a";  // draws noise at every step: any cross-talk between generators shows
  return r;
}

TEST(PipelineThreads, TwoPipelinesInTwoThreadsEqualSequentialRuns) {
  tide::testing::TempDir dir;
  tide::testing::make_tiny_pipeline(dir.path() / "model");
  auto plain = StableDiffusionPipeline::from_folder(dir.path() / "model");
  auto fast = StableDiffusionPipeline::from_folder(dir.path() / "model");
  plain->set_compute_settings({tide::runtime::Optimizations::plain(), 1});
  fast->set_compute_settings({tide::runtime::Optimizations(), 1});

  const auto plain_alone = plain->generate(request_with_seed(1));
  const auto fast_alone = fast->generate(request_with_seed(2));
  // The settings must matter for this test to show anything: plain libtorch attention and the blocked
  // kernel round differently, so the same request gives other bits.
  const auto fast_seed1 = fast->generate(request_with_seed(1));
  ASSERT_FALSE(at::equal(fast_seed1.latents, plain_alone.latents))
      << "plain and optimized settings gave identical latents; the test could not see a leaked setting";

  for (int round = 0; round < 3; ++round) {
    tide::pipeline::GenerationResult plain_threaded, fast_threaded;
    std::thread a([&] { plain_threaded = plain->generate(request_with_seed(1)); });
    std::thread b([&] { fast_threaded = fast->generate(request_with_seed(2)); });
    a.join();
    b.join();
    EXPECT_TRUE(at::equal(plain_threaded.latents, plain_alone.latents)) << "round " << round;
    EXPECT_TRUE(at::equal(fast_threaded.latents, fast_alone.latents)) << "round " << round;
    EXPECT_TRUE(at::equal(plain_threaded.images, plain_alone.images)) << "round " << round;
    EXPECT_TRUE(at::equal(fast_threaded.images, fast_alone.images)) << "round " << round;
  }
  // The calling thread's own setting is untouched by the pipelines' calls.
  EXPECT_TRUE(tide::runtime::optimizations().blocked_attention);
}

// With adapt_to_load, a pipeline beside processes that keep every core busy computes with one thread, and
// leaves the calling thread's own count as it was.
TEST(PipelineThreads, AdaptingToTheLoadRunsOneThreadWhenEveryCoreIsBusy) {
  tide::testing::TempDir dir;
  tide::testing::make_tiny_pipeline(dir.path() / "model");
  auto pipe = StableDiffusionPipeline::from_folder(dir.path() / "model");
  const int cores = tide::runtime::usable_cores();
  const int limit = std::max(2, cores);
  at::set_num_threads(1);
  // A fixed single thread: what the adapted run must match (split between threads, GEMMs may add in another
  // order on some CPUs).
  pipe->set_compute_settings({pipe->compute_settings().optimizations, 1});
  const auto fixed = pipe->generate(request_with_seed(5));
  EXPECT_EQ(pipe->load_aware_threads(), nullptr);

  tide::pipeline::GenerationResult adapted;
  {
    tide::bench::CpuHog hog(cores);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    pipe->set_compute_settings({pipe->compute_settings().optimizations, limit, true});
    ASSERT_NE(pipe->load_aware_threads(), nullptr);
    adapted = pipe->generate(request_with_seed(5));
  }
  EXPECT_EQ(pipe->load_aware_threads()->most(), 1) << cores << " cores were all busy";
  EXPECT_EQ(at::get_num_threads(), 1) << "the calling thread's count was not restored";
  EXPECT_TRUE(at::equal(adapted.latents, fixed.latents)) << "the adapted run is not the one-thread run";
}

}  // namespace
