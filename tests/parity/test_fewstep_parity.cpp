// Few-step sampling against diffusers (features/fewstep): LCM and TCD through StableDiffusionPipeline, the
// LatentConsistencyModelPipeline with its guidance embedding, and "Turbo" settings (Euler ancestral with
// trailing spacing, no guidance) on SD2 and SDXL. Each case is checked scheduler by scheduler input: the
// schedule, the noise drawn inside the steps, the steps themselves on diffusers' model outputs, the first
// UNet call with its timestep_cond, then the whole run to the decoded image.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/nn/timestep_embedding.h"
#include "tide/pipeline/stable_diffusion.h"

namespace {
namespace fs = std::filesystem;
using namespace tide;
using tide::testing::feature_case;

// The random tiny UNets give latents up to ~80 in these cases: tolerances relative to the reference's
// largest value (features/README.md: 1e-4 of max|reference| for latents, 1e-3 for image.npy).

#define EXPECT_RELATIVE_NEAR(actual, expected, tol)                                                  \
  do {                                                                                               \
    const at::Tensor a_ = (actual), e_ = (expected);                                                 \
    ASSERT_EQ(a_.sizes(), e_.sizes()) << #actual;                                                    \
    const double r_ = tide::testing::relative_max_error(a_, e_);                                                        \
    EXPECT_LE(r_, (tol)) << #actual " vs " #expected ": relative error " << r_;                     \
    std::printf("  %-34s relative error %.3g\n", #expected, r_);                                    \
  } while (0)

pipeline::StableDiffusionPipeline& load_pipeline(const std::string& name) {
  static std::map<std::string, std::unique_ptr<pipeline::StableDiffusionPipeline>> cache;
  auto& p = cache[name];
  if (!p) p = pipeline::StableDiffusionPipeline::from_folder(tide::testing::pipeline_dir(name));
  return *p;
}

// What a user asks tide for to reproduce the case: the scheduler by its CLI name (none: the model's own),
// the spacing override, eta.
pipeline::GenerationRequest request_for(const nlohmann::json& c) {
  pipeline::GenerationRequest r;
  r.prompt = c["prompt"].get<std::string>();
  if (!c["negative_prompt"].is_null()) r.negative_prompt = c["negative_prompt"].get<std::string>();
  r.width = c["width"].get<int>();
  r.height = c["height"].get<int>();
  r.steps = c["steps"].get<int>();
  r.guidance = c["guidance_scale"].get<double>();
  r.seed = c["seed"].get<uint64_t>();
  const auto& kwargs = c["scheduler_kwargs"];
  if (!c["scheduler"].is_null()) {
    r.scheduler = schedulers::scheduler_name_for_class(c["scheduler"].get<std::string>(), c["scheduler_config"]);
    EXPECT_FALSE(r.scheduler.empty()) << "no tide scheduler for " << c["scheduler"];
  }
  if (kwargs.contains("timestep_spacing")) r.scheduler_options.timestep_spacing = kwargs["timestep_spacing"].get<std::string>();
  if (!c["eta"].is_null()) r.scheduler_options.eta = c["eta"].get<double>();
  return r;
}

at::Tensor optional_npy(const fs::path& path) { return fs::exists(path) ? io::read_npy(path) : at::Tensor(); }

class FewStepParity : public ::testing::TestWithParam<std::string> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(FewStepParity);

TEST_P(FewStepParity, MatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  c10::InferenceMode inference;
  const fs::path dir = feature_case("fewstep", GetParam());
  const auto c = io::read_json(dir / "case.json");
  auto& pipe = load_pipeline(c["pipeline"].get<std::string>());
  const auto request = pipe.resolve(request_for(c));
  std::printf("%s\n", GetParam().c_str());

  // No classifier-free guidance in any case (guidance <= 1, or a guidance-embedding UNet).
  EXPECT_EQ(pipe.uses_classifier_free_guidance(request.guidance), c["do_classifier_free_guidance"].get<bool>());
  const auto cond = pipe.encode_prompt(request.prompt);
  EXPECT_TENSOR_NEAR(cond.context, io::read_npy(dir / "prompt_embeds.npy"), 1e-4);

  // The schedule and the initial latents.
  auto scheduler = pipe.make_scheduler(request);
  scheduler->set_timesteps(request.steps);
  const at::Tensor timesteps = io::read_npy(dir / "timesteps_all.npy").to(at::kDouble);
  ASSERT_EQ(static_cast<int64_t>(scheduler->timesteps().size()), timesteps.numel());
  for (int64_t i = 0; i < timesteps.numel(); ++i)
    EXPECT_EQ(scheduler->timesteps()[i], timesteps[i].item<double>()) << "timestep " << i;
  if (fs::exists(dir / "sigmas_all.npy"))
    EXPECT_TENSOR_NEAR(at::tensor(scheduler->sigmas(), at::kDouble), io::read_npy(dir / "sigmas_all.npy"), 1e-5);
  EXPECT_NEAR(scheduler->init_noise_sigma(), c["init_noise_sigma"].get<double>(), 1e-5);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  const at::Tensor latents_init = pipe.prepare_latents(1, request.height, request.width, scheduler->init_noise_sigma(), gen);
  EXPECT_TENSOR_NEAR(latents_init, io::read_npy(dir / "latents_init.npy"), 1e-5);

  // The noise the steps draw: the generator's next draws after the initial noise, one per stochastic step.
  const at::Tensor step_noise = io::read_npy(dir / "step_noise.npy");
  {
    at::Generator copy = gen.clone();
    for (int64_t k = 0; k < step_noise.size(0); ++k)
      EXPECT_TENSOR_NEAR(at::randn(latents_init.sizes(), copy, at::kFloat), step_noise[k], 1e-6);
  }

  // The scheduler alone, on diffusers' model outputs: per-step latents and its second output (LCM denoised,
  // TCD pred_noised_sample). The draws come from the generator, in the pipeline's order.
  const at::Tensor model_outputs = io::read_npy(dir / "step_model_output.npy");
  const at::Tensor steps = io::read_npy(dir / "latents_steps.npy");
  const at::Tensor step_denoised = io::read_npy(dir / "step_denoised.npy");
  at::Tensor x = latents_init;
  double worst_scheduler_step = 0, worst_denoised = 0;
  for (size_t i = 0; i < scheduler->timesteps().size(); ++i) {
    const double t = scheduler->timesteps()[i];
    scheduler->scale_model_input(x, t);
    x = scheduler->step(model_outputs[i], t, x, gen);
    worst_scheduler_step = std::max(worst_scheduler_step, tide::testing::relative_max_error(x, steps[i]));
    if (scheduler->last_denoised().defined())
      worst_denoised = std::max(worst_denoised, tide::testing::relative_max_error(scheduler->last_denoised(), step_denoised[i]));
  }
  EXPECT_LE(worst_scheduler_step, 1e-5) << "scheduler steps on diffusers' model outputs";
  EXPECT_LE(worst_denoised, 1e-5) << "the steps' denoised outputs";
  std::printf("  scheduler steps: relative error %.3g", worst_scheduler_step);
  if (scheduler->last_denoised().defined()) std::printf(", denoised %.3g", worst_denoised);
  std::printf("\n");
  if (request.scheduler == "lcm" || request.scheduler == "tcd" || request.scheduler.empty()) {
    EXPECT_TRUE(scheduler->last_denoised().defined()) << "LCM/TCD give their denoised output";
  }

  // The first UNet call: scaled sample, context, SDXL conds, LCM guidance embedding.
  at::Tensor timestep_cond;
  if (fs::exists(dir / "unet_step0_timestep_cond.npy")) {
    const int64_t dim = pipe.unet()->config().time_cond_proj_dim;
    ASSERT_GT(dim, 0) << "the case has a timestep_cond; the UNet must have time_cond_proj_dim";
    timestep_cond = nn::guidance_scale_embedding(at::full({1}, request.guidance - 1, at::kFloat), dim);
    EXPECT_RELATIVE_NEAR(timestep_cond, io::read_npy(dir / "unet_step0_timestep_cond.npy"), 1e-6);
  }
  auto fresh = pipe.make_scheduler(request);
  fresh->set_timesteps(request.steps);
  const double t0 = fresh->timesteps()[0];
  EXPECT_EQ(t0, io::read_npy(dir / "unet_call_timesteps.npy").to(at::kDouble)[0].item<double>());
  const at::Tensor sample0 = fresh->scale_model_input(latents_init, t0);
  EXPECT_RELATIVE_NEAR(sample0, io::read_npy(dir / "unet_step0_sample.npy"), 1e-6);
  const at::Tensor out0 =
      pipe.unet()->forward(io::read_npy(dir / "unet_step0_sample.npy"), t0,
                           io::read_npy(dir / "unet_step0_encoder_hidden_states.npy"),
                           optional_npy(dir / "unet_step0_text_embeds.npy"), optional_npy(dir / "unet_step0_time_ids.npy"),
                           timestep_cond);
  EXPECT_RELATIVE_NEAR(out0, io::read_npy(dir / "unet_step0_out.npy"), 1e-4);

  // The whole run.
  double worst_step = 0;
  const auto result = pipe.generate(request, [&](const pipeline::StepInfo& s) {
    worst_step = std::max(worst_step, tide::testing::relative_max_error(s.latents, steps[s.index]));
  });
  EXPECT_EQ(result.unet_calls, c["num_unet_calls"].get<int>());
  EXPECT_LE(worst_step, 1e-4) << "latents after some step differ";
  std::printf("  pipeline per-step latents: worst relative error %.3g\n", worst_step);
  EXPECT_RELATIVE_NEAR(result.latents, io::read_npy(dir / "latents_final.npy"), 1e-4);
  // What the VAE decoded (LCM pipeline: the last `denoised`, equal to the final latents at the last step).
  const double scaling = c["vae_scaling_factor"].get<double>();
  EXPECT_RELATIVE_NEAR(result.latents / scaling, io::read_npy(dir / "vae_decode_in.npy"), 1e-4);
  const at::Tensor image = (result.decoded / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1});  // [1, H, W, 3]
  EXPECT_TENSOR_NEAR(image, io::read_npy(dir / "image.npy"), 1e-3);
  std::printf("  image.npy max abs diff %.3g\n", tide::testing::max_abs_diff(image, io::read_npy(dir / "image.npy")));
}

INSTANTIATE_TEST_SUITE_P(Features, FewStepParity, ::testing::ValuesIn(tide::testing::feature_cases("fewstep")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param); });

// The fixtures hold LCM, TCD, LCM-pipeline and turbo cases, so the list above is not silently empty.
TEST(FewStepParityCases, FixturesHoldEveryKind) {
  TIDE_REQUIRE_FIXTURES();
  const auto cases = tide::testing::feature_cases("fewstep");
  EXPECT_GE(cases.size(), 5u);
  for (const char* kind : {"lcm", "tcd", "lcm_pipe", "turbo"}) {
    bool found = false;
    for (const auto& id : cases) {
      const auto c = io::read_json(feature_case("fewstep", id) / "case.json");
      const std::string cls = c["scheduler"].is_null() ? "" : c["scheduler"].get<std::string>();
      const std::string pipeline_class = c["pipeline_class"].get<std::string>();
      if (std::string(kind) == "lcm") found |= cls == "LCMScheduler";
      if (std::string(kind) == "tcd") found |= cls == "TCDScheduler";
      if (std::string(kind) == "lcm_pipe") found |= pipeline_class == "LatentConsistencyModelPipeline";
      if (std::string(kind) == "turbo") found |= c["scheduler_kwargs"].value("timestep_spacing", "") == "trailing";
    }
    EXPECT_TRUE(found) << "no " << kind << " case";
  }
}

}  // namespace
