// End-to-end parity with diffusers: every pipeline case in the reference fixtures, run through
// tide's pipeline, must give the same token ids, embeddings, noise, latents and pixels.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "test_support.h"
#include "tide/io/image.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::reference_case;
using tide::testing::scheduler_cli_name;

pipeline::StableDiffusionPipeline& load_pipeline(const std::string& name) {
  static std::map<std::string, std::unique_ptr<pipeline::StableDiffusionPipeline>> cache;
  auto& p = cache[name];
  if (!p) p = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(name));
  return *p;
}

// The request a user would make for this case, and the pipeline it runs on.
pipeline::GenerationRequest request_for(const nlohmann::json& c) {
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  r.num_images = c["num_images_per_prompt"].get<int>();
  const auto& kwargs = c["scheduler_kwargs"];
  r.scheduler = scheduler_cli_name(c["scheduler"].get<std::string>(), kwargs);
  r.scheduler_options.karras = kwargs.value("use_karras_sigmas", false);
  if (!c["eta"].is_null()) r.scheduler_options.eta = c["eta"].get<double>();
  return r;
}

void check_case(const std::string& id) {
  const fs::path dir = reference_case(id);
  const auto c = io::read_json(dir / "case.json");
  auto& pipe = load_pipeline(c["pipeline"].get<std::string>());
  const auto request = request_for(c);

  // Text embeddings of prompt and negative prompt (SDXL: both encoders' states side by side, and pooled).
  const auto cond = pipe.encode_prompt(request.prompt);
  EXPECT_TENSOR_NEAR(cond.context[0], io::read_npy(dir / "prompt_embeds.npy")[0], 1e-4);
  if (pipe.is_xl()) EXPECT_TENSOR_NEAR(cond.pooled[0], io::read_npy(dir / "pooled_prompt_embeds.npy")[0], 1e-4);
  if (request.negative_prompt || !pipe.is_xl()) {
    const auto uncond = pipe.encode_prompt(request.negative_prompt.value_or(""));
    if (fs::exists(dir / "negative_prompt_embeds.npy"))
      EXPECT_TENSOR_NEAR(uncond.context[0], io::read_npy(dir / "negative_prompt_embeds.npy")[0], 1e-4);
    if (pipe.is_xl())
      EXPECT_TENSOR_NEAR(uncond.pooled[0], io::read_npy(dir / "negative_pooled_prompt_embeds.npy")[0], 1e-4);
  }

  // Initial latents from the seeded generator.
  auto scheduler = pipe.make_scheduler(request);
  scheduler->set_timesteps(request.steps);
  EXPECT_NEAR(scheduler->init_noise_sigma(), c["init_noise_sigma"].get<double>(), 1e-5);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  at::Tensor latents = pipe.prepare_latents(request.num_images, request.height, request.width,
                                            scheduler->init_noise_sigma(), gen);
  EXPECT_TENSOR_NEAR(latents, io::read_npy(dir / "latents_init.npy"), 1e-5);

  // The whole run, step by step.
  at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  double worst_step = 0;
  auto result = pipe.generate(request, [&](const pipeline::StepInfo& s) {
    worst_step = std::max(worst_step, tide::testing::max_abs_diff(s.latents, steps[s.index]));
  });
  EXPECT_EQ(result.unet_calls, c["num_unet_calls"].get<int>());
  EXPECT_LE(worst_step, 1e-3) << "latents after some step differ";
  EXPECT_TENSOR_NEAR(result.latents, io::read_npy(dir / "latents_final.npy"), 1e-3);
  std::printf("%s: worst per-step latent diff %.3g, final %.3g\n", id.c_str(), worst_step,
              tide::testing::max_abs_diff(result.latents, io::read_npy(dir / "latents_final.npy")));

  // Pixels: each within 2 levels of 255, mean difference at most 0.25 level.
  for (int i = 0; i < request.num_images; ++i) {
    auto reference = io::read_png(dir / ("image_" + std::to_string(i) + ".png")).rgb8;
    ASSERT_EQ(reference.sizes(), result.images[i].sizes());
    at::Tensor diff = (reference.to(at::kInt) - result.images[i].to(at::kInt)).abs();
    EXPECT_LE(diff.max().item<int>(), 2) << "image " << i;
    EXPECT_LE(diff.to(at::kDouble).mean().item<double>(), 0.25) << "image " << i;
    std::printf("  image %d: max pixel diff %d, mean %.4f\n", i, diff.max().item<int>(),
                diff.to(at::kDouble).mean().item<double>());
  }
}

class PipelineParity : public ::testing::TestWithParam<tide::testing::ReferenceCase> {};
// Without fixtures there are no cases: the *Cases tests below report the skip.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(PipelineParity);

TEST_P(PipelineParity, MatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  check_case(GetParam().id);
}

// Every whole-run case of the reference set, found when the tests run.
const auto kCaseName = [](const auto& info) { return tide::testing::case_test_name(info.param.id); };
INSTANTIATE_TEST_SUITE_P(Sd1, PipelineParity,
                         ::testing::ValuesIn(tide::testing::reference_cases("latents_final.npy", "sd1-tiny")), kCaseName);
INSTANTIATE_TEST_SUITE_P(Sd2, PipelineParity,
                         ::testing::ValuesIn(tide::testing::reference_cases("latents_final.npy", "sd2-tiny")), kCaseName);
INSTANTIATE_TEST_SUITE_P(Sdxl, PipelineParity,
                         ::testing::ValuesIn(tide::testing::reference_cases("latents_final.npy", "sdxl-tiny")), kCaseName);

// The fixtures hold cases of every family, so the lists above are not silently empty.
TEST(PipelineParityCases, EveryFamilyHasCases) {
  TIDE_REQUIRE_FIXTURES();
  for (const char* pipeline : {"sd1-tiny", "sd2-tiny", "sdxl-tiny"})
    EXPECT_FALSE(tide::testing::reference_cases("latents_final.npy", pipeline).empty()) << pipeline;
}

}  // namespace
