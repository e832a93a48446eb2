// Schedulers against diffusers 0.35 (reference fixtures): for every pipeline case, the schedule
// (timesteps of every UNet call, sigmas, init sigma), the initial noise from the seeded generator, the
// scaled UNet input of the first call and the first step from the recorded first UNet output.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "test_support.h"
#include "tide/io/json_file.h"
#include "tide/io/npy.h"
#include "tide/schedulers/scheduler.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tide::schedulers::make_scheduler;
using tide::schedulers::SchedulerOptions;


// case.json is written by Python's json, which spells infinities -Infinity (not JSON): read them as null,
// which the schedulers take as the default (lambda_min_clipped = -inf).
json read_case(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(std::regex_replace(text.str(), std::regex(R"(-?\bInfinity\b|\bNaN\b)"), "null"));
}

std::vector<double> npy_values(const fs::path& file) {
  const at::Tensor t = tide::io::read_npy(file).to(at::kDouble).contiguous();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

struct Case {
  fs::path dir;
  json meta;
  std::string name;  // CLI scheduler name
  SchedulerOptions options;

  explicit Case(const std::string& id) : dir(tide::testing::reference_case(id)), meta(read_case(dir / "case.json")) {
    const json& kwargs = meta.at("scheduler_kwargs");
    options.karras = kwargs.value("use_karras_sigmas", false);
    options.eta = meta.at("eta").is_null() ? 0.0 : meta.at("eta").get<double>();
    name = tide::schedulers::scheduler_name_for_class(meta.at("scheduler"), meta.at("scheduler_config"));
  }
  at::Tensor npy(const std::string& file) const { return tide::io::read_npy(dir / file); }
};

class SchedulerParity : public ::testing::TestWithParam<tide::testing::ReferenceCase> {};
// Without fixtures there are no cases: the *Cases tests below report the skip.
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(SchedulerParity);

TEST_P(SchedulerParity, ScheduleMatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  const Case c(GetParam().id);
  ASSERT_FALSE(c.name.empty()) << c.meta.at("scheduler");
  auto scheduler = make_scheduler(c.name, c.meta.at("scheduler_config"), c.options);
  scheduler->set_timesteps(c.meta.at("steps").get<int>());

  EXPECT_EQ(scheduler->timesteps(), npy_values(c.dir / "unet_call_timesteps.npy"));
  EXPECT_EQ(scheduler->timesteps(), npy_values(c.dir / "timesteps.npy"));
  EXPECT_EQ(static_cast<int>(scheduler->timesteps().size()), c.meta.at("num_unet_calls").get<int>());
  if (fs::exists(c.dir / "sigmas.npy")) {
    const std::vector<double> expected = npy_values(c.dir / "sigmas.npy");
    const std::vector<double> actual = scheduler->sigmas();
    ASSERT_EQ(actual.size(), expected.size());
    EXPECT_EQ(actual, expected);  // float32 values, bit for bit
  }
  EXPECT_EQ(scheduler->init_noise_sigma(), c.meta.at("init_noise_sigma").get<double>());

  // The same schedule from the model's own scheduler_config.json plus the CLI options, as tide generate builds it.
  const fs::path own_config = tide::testing::pipeline_dir(c.meta.at("pipeline")) / "scheduler" / "scheduler_config.json";
  auto from_model = make_scheduler(c.name, tide::io::read_json(own_config), c.options);
  from_model->set_timesteps(c.meta.at("steps").get<int>());
  EXPECT_EQ(from_model->timesteps(), scheduler->timesteps());
  EXPECT_EQ(from_model->sigmas(), scheduler->sigmas());
  EXPECT_EQ(from_model->init_noise_sigma(), scheduler->init_noise_sigma());
}

TEST_P(SchedulerParity, FirstStepMatchesDiffusers) {
  TIDE_REQUIRE_FIXTURES();
  const Case c(GetParam().id);
  auto scheduler = make_scheduler(c.name, c.meta.at("scheduler_config"), c.options);
  scheduler->set_timesteps(c.meta.at("steps").get<int>());

  // Initial latents: the first draw of the seeded CPU generator, times init_noise_sigma.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(c.meta.at("seed").get<uint64_t>());
  const at::Tensor expected_noise = c.npy("noise.npy");
  const at::Tensor noise = at::randn(expected_noise.sizes(), generator, at::kFloat);
  EXPECT_TENSOR_NEAR(noise, expected_noise, 0.0);
  const at::Tensor latents = c.npy("latents_init.npy");
  EXPECT_TENSOR_NEAR(noise * scheduler->init_noise_sigma(), latents, 0.0);

  // First UNet input: the scaled latents, duplicated for classifier-free guidance.
  const double t0 = scheduler->timesteps().at(0);
  const bool guided = c.meta.at("guidance_scale").get<double>() > 1.0;
  const at::Tensor model_input = scheduler->scale_model_input(latents, t0);
  EXPECT_TENSOR_NEAR(guided ? at::cat({model_input, model_input}) : model_input, c.npy("unet_step0_sample.npy"), 0.0);

  at::Tensor model_output = c.npy("unet_step0_out.npy");
  if (guided) {
    const auto halves = model_output.chunk(2);
    model_output = halves[0] + c.meta.at("guidance_scale").get<double>() * (halves[1] - halves[0]);
  }
  // Stochastic schedulers draw their step noise right after the initial noise.
  if (fs::exists(c.dir / "step_noise.npy")) {
    at::Generator copy = generator.clone();
    EXPECT_TENSOR_NEAR(at::randn(model_output.sizes(), copy, at::kFloat), c.npy("step_noise.npy")[0], 0.0);
  }
  const at::Tensor expected = c.npy("latents_steps.npy")[0];
  const at::Tensor actual = scheduler->step(model_output, t0, latents, generator);
  EXPECT_TENSOR_NEAR(actual, expected, 1e-5);
  const double diff = tide::testing::max_abs_diff(actual, expected);
  const double scale = expected.abs().max().item<double>();
  std::printf("[ %-26s ] %-8s first step max |diff| %.3g (max |latent| %.3g)\n", GetParam().id.c_str(),
              c.name.c_str(), diff, scale);
}

// Every whole-run case of the reference set, found when the tests run.
INSTANTIATE_TEST_SUITE_P(Cases, SchedulerParity, ::testing::ValuesIn(tide::testing::reference_cases("latents_steps.npy")),
                         [](const auto& info) { return tide::testing::case_test_name(info.param.id); });

TEST(SchedulerParityCases, FixturesHoldCases) {
  TIDE_REQUIRE_FIXTURES();
  EXPECT_FALSE(tide::testing::reference_cases("latents_steps.npy").empty());
}

}  // namespace
