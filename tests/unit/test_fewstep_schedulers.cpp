// Few-step sampling without fixtures: LCM and TCD timestep schedules and trailing spacings worked out by hand
// from diffusers' formulas, the LCM/TCD step on inputs whose result is known in closed form, when they draw
// noise, and the errors for options that do not apply.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "test_support.h"
#include "tide/nn/timestep_embedding.h"
#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"

namespace {

using nlohmann::json;
using tide::schedulers::make_scheduler;
using tide::schedulers::Scheduler;
using tide::schedulers::SchedulerOptions;

// An LCM-distilled model's scheduler_config.json (SD 1.5 betas; LCMScheduler's own keys).
json lcm_config(json extra = json::object()) {
  json c = {{"_class_name", "LCMScheduler"}, {"beta_start", 0.00085}, {"beta_end", 0.012},
            {"beta_schedule", "scaled_linear"}, {"num_train_timesteps", 1000}, {"original_inference_steps", 50},
            {"set_alpha_to_one", false}, {"steps_offset", 1}, {"timestep_scaling", 10.0},
            {"prediction_type", "epsilon"}, {"timestep_spacing", "leading"}};
  c.update(extra);
  return c;
}

std::vector<double> schedule(const std::string& name, int steps, const json& config = lcm_config(),
                             SchedulerOptions options = {}) {
  auto s = make_scheduler(name, config, options);
  s->set_timesteps(steps);
  return s->timesteps();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tide::Error& e) {
    return e.what();
  }
  return "";
}

using V = std::vector<double>;

// k = 1000 // 50 = 20: distillation timesteps 19, 39, ..., 999, reversed; n of them at
// floor(linspace(0, 50, n, endpoint=False)).
TEST(FewStepSchedulers, LcmTimestepsFromTheDistillationSchedule) {
  EXPECT_EQ(schedule("lcm", 1), V({999}));
  EXPECT_EQ(schedule("lcm", 2), V({999, 499}));           // indices 0, 25
  EXPECT_EQ(schedule("lcm", 4), V({999, 759, 499, 259}));  // indices 0, 12, 25, 37
  EXPECT_EQ(schedule("lcm", 8), V({999, 879, 759, 639, 499, 379, 259, 139}));  // 0, 6, 12, 18, 25, 31, 37, 43
  // original_inference_steps 10: k = 100, 999, 899, ..., 99; 3 steps at indices 0, 3, 6.
  EXPECT_EQ(schedule("lcm", 3, lcm_config({{"original_inference_steps", 10}})), V({999, 699, 399}));
  // 50 of 50: every distillation timestep.
  EXPECT_EQ(schedule("lcm", 50).back(), 19);
}

TEST(FewStepSchedulers, TcdTimesteps) {
  EXPECT_EQ(schedule("tcd", 4, lcm_config({{"_class_name", "TCDScheduler"}})), V({999, 759, 499, 259}));
  // original_inference_steps null: all 1000 training timesteps, 4 at indices 0, 250, 500, 750.
  EXPECT_EQ(schedule("tcd", 4, lcm_config({{"original_inference_steps", nullptr}})), V({999, 749, 499, 249}));
}

TEST(FewStepSchedulers, TrailingSpacingOverride) {
  SchedulerOptions trailing;
  trailing.timestep_spacing = "trailing";
  const json sd = lcm_config({{"_class_name", "EulerAncestralDiscreteScheduler"}});
  // round(arange(1000, 0, -1000/n)) - 1
  EXPECT_EQ(schedule("euler-a", 1, sd, trailing), V({999}));
  EXPECT_EQ(schedule("euler-a", 2, sd, trailing), V({999, 499}));
  EXPECT_EQ(schedule("ddim", 4, sd, trailing), V({999, 749, 499, 249}));
  EXPECT_EQ(schedule("euler", 3, sd, trailing), V({999, 666, 332}));  // 1000, 666.67, 333.33 rounded, - 1
  // The override wins over the config's own spacing (leading here: 750, 500, 250, 0 + offset 1).
  EXPECT_EQ(schedule("ddim", 4, sd), V({751, 501, 251, 1}));
  SchedulerOptions linspace;
  linspace.timestep_spacing = "linspace";
  EXPECT_EQ(schedule("ddim", 4, sd, linspace), V({999, 666, 333, 0}));
  // Trailing: the first sigma is sigma_max and init_noise_sigma is it, not sqrt(sigma^2 + 1).
  auto euler_a = make_scheduler("euler-a", sd, trailing);
  euler_a->set_timesteps(1);
  EXPECT_NEAR(euler_a->init_noise_sigma(), 14.614645, 1e-5);
}

TEST(FewStepSchedulers, OptionErrors) {
  SchedulerOptions bad;
  bad.timestep_spacing = "sideways";
  EXPECT_NE(error_of([&] { make_scheduler("ddim", lcm_config(), bad); }).find("sideways"), std::string::npos);
  SchedulerOptions trailing;
  trailing.timestep_spacing = "trailing";
  EXPECT_NE(error_of([&] { make_scheduler("lcm", lcm_config(), trailing); }).find("original_inference_steps"),
            std::string::npos);
  SchedulerOptions eta;
  eta.eta = 0.3;
  EXPECT_NO_THROW(make_scheduler("tcd", lcm_config(), eta));
  EXPECT_NE(error_of([&] { make_scheduler("lcm", lcm_config(), eta); }).find("eta"), std::string::npos);
  eta.eta = 1.5;
  EXPECT_NE(error_of([&] { make_scheduler("tcd", lcm_config(), eta); }).find("[0, 1]"), std::string::npos);
  // More steps than the distillation schedule has.
  auto lcm = make_scheduler("lcm", lcm_config(), {});
  EXPECT_NE(error_of([&] { lcm->set_timesteps(51); }).find("original_inference_steps"), std::string::npos);
  EXPECT_THROW(lcm->set_timesteps(0), tide::Error);
}

// At the last step (no re-noising) with a zero model output, LCM gives denoised = c_out·x/sqrt(acp[t]) +
// c_skip·x with c_skip = 0.25/((10t)^2 + 0.25), c_out = 10t/sqrt((10t)^2 + 0.25), and draws nothing.
TEST(FewStepSchedulers, LcmOneStepIsTheBoundaryConditionWithoutNoise) {
  auto lcm = make_scheduler("lcm", lcm_config(), {});
  lcm->set_timesteps(1);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Generator untouched = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor x = at::linspace(-2, 2, 16, at::kFloat).reshape({1, 4, 2, 2});
  const at::Tensor out = lcm->step(at::zeros_like(x), 999, x, g);
  const double acp = lcm->alphas_cumprod()[999].item<double>();
  const double st = 9990.0, c_skip = 0.25 / (st * st + 0.25), c_out = st / std::sqrt(st * st + 0.25);
  EXPECT_TENSOR_NEAR(out.to(at::kDouble), x.to(at::kDouble) * (c_out / std::sqrt(acp) + c_skip), 1e-4);
  EXPECT_TRUE(lcm->last_denoised().equal(out));
  EXPECT_TRUE(at::randn({8}, g).equal(at::randn({8}, untouched))) << "a one-step LCM must not draw noise";
}

// Not the last step: x_prev = sqrt(acp[t_next])·denoised + sqrt(1 - acp[t_next])·z, z the next draw.
TEST(FewStepSchedulers, LcmRenoisesWithTheNextDraw) {
  auto lcm = make_scheduler("lcm", lcm_config(), {});
  lcm->set_timesteps(2);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  at::Generator copy = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor x = at::linspace(-2, 2, 16, at::kFloat).reshape({1, 4, 2, 2});
  const at::Tensor eps = at::full_like(x, 0.5);
  const at::Tensor prev = lcm->step(eps, 999, x, g);
  const at::Tensor z = at::randn(x.sizes(), copy, at::kFloat);
  const double a_next = lcm->alphas_cumprod()[499].item<double>();
  const at::Tensor expected = std::sqrt(a_next) * lcm->last_denoised() + std::sqrt(1 - a_next) * z;
  EXPECT_TENSOR_NEAR(prev, expected, 1e-5);
}

// TCD with gamma 0.3 at 759 -> 499: s = floor(0.7·499) = 349; pred_noised = sqrt(acp[s])·x0 + sqrt(1-acp[s])·eps;
// then x_prev = sqrt(acp[499]/acp[s])·pred_noised + sqrt(1 - acp[499]/acp[s])·z.
TEST(FewStepSchedulers, TcdStepAtTheIntermediateTimestep) {
  SchedulerOptions gamma;
  gamma.eta = 0.3;
  auto tcd = make_scheduler("tcd", lcm_config(), gamma);
  tcd->set_timesteps(4);  // 999, 759, 499, 259
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator copy = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor x = at::linspace(-1, 1, 16, at::kFloat).reshape({1, 4, 2, 2});
  const at::Tensor eps = at::full_like(x, 0.25);
  const at::Tensor x1 = tcd->step(eps, 999, x, g);  // 999 -> 759, s = floor(0.7·759) = 531
  at::randn(x.sizes(), copy, at::kFloat);
  const at::Tensor x2 = tcd->step(eps, 759, x1, g);
  const auto acp = [&](int t) { return tcd->alphas_cumprod()[t].item<double>(); };
  const at::Tensor x0 = (x1.to(at::kDouble) - std::sqrt(1 - acp(759)) * 0.25) / std::sqrt(acp(759));
  const at::Tensor noised = std::sqrt(acp(349)) * x0 + std::sqrt(1 - acp(349)) * 0.25;
  EXPECT_TENSOR_NEAR(tcd->last_denoised().to(at::kDouble), noised, 1e-5);
  const at::Tensor z = at::randn(x.sizes(), copy, at::kFloat).to(at::kDouble);
  const double r = acp(499) / acp(349);
  EXPECT_TENSOR_NEAR(x2.to(at::kDouble), std::sqrt(r) * noised + std::sqrt(1 - r) * z, 1e-5);
}

// gamma 0 (the default of --eta): deterministic, no draws at all.
TEST(FewStepSchedulers, TcdWithoutGammaDrawsNothing) {
  auto tcd = make_scheduler("tcd", lcm_config(), {});
  tcd->set_timesteps(4);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(9);
  at::Generator untouched = at::make_generator<at::CPUGeneratorImpl>(9);
  at::Tensor x = at::linspace(-1, 1, 16, at::kFloat).reshape({1, 4, 2, 2});
  for (double t : tcd->timesteps()) x = tcd->step(at::full_like(x, 0.1), t, x, g);
  EXPECT_TRUE(at::randn({8}, g).equal(at::randn({8}, untouched)));
}

// get_guidance_scale_embedding(w, 4): w·1000 at frequencies exp(-i·ln(10000)/1), i = 0, 1: [sin, sin, cos, cos].
TEST(FewStepSchedulers, GuidanceScaleEmbedding) {
  const at::Tensor e = tide::nn::guidance_scale_embedding(at::tensor({0.5f}), 4);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{1, 4}));
  const double a = 500.0, b = 500.0 / 10000.0;
  EXPECT_TENSOR_NEAR(e[0].to(at::kDouble), at::tensor({std::sin(a), std::sin(b), std::cos(a), std::cos(b)}, at::kDouble),
                     1e-4);
  EXPECT_EQ(tide::nn::guidance_scale_embedding(at::tensor({1.0f, 2.0f}), 5).sizes(), (std::vector<int64_t>{2, 5}));
}

}  // namespace
