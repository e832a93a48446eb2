// Schedulers without fixtures: names and errors, beta schedules, timestep spacings, Karras sigmas, and
// runs on synthetic models compared with closed forms or float64 re-derivations of each algorithm.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "test_support.h"
#include "tide/runtime/error.h"
#include "tide/schedulers/scheduler.h"

namespace {

using nlohmann::json;
using tide::schedulers::make_scheduler;
using tide::schedulers::Scheduler;
using tide::schedulers::SchedulerOptions;
using Model = std::function<at::Tensor(const at::Tensor& input, double t)>;

// Stable Diffusion 1.x's scheduler_config.json (a PNDM config).
json sd_config(json extra = json::object()) {
  json c = {{"_class_name", "PNDMScheduler"}, {"beta_start", 0.00085},   {"beta_end", 0.012},
            {"beta_schedule", "scaled_linear"}, {"clip_sample", false},  {"num_train_timesteps", 1000},
            {"prediction_type", "epsilon"},     {"set_alpha_to_one", false}, {"skip_prk_steps", true},
            {"steps_offset", 1},                {"timestep_spacing", "leading"}};
  c.update(extra);
  return c;
}

std::unique_ptr<Scheduler> make(const std::string& name, const json& config = sd_config(), SchedulerOptions o = {}) {
  return make_scheduler(name, config, o);
}

std::vector<double> values(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return {d.data_ptr<double>(), d.data_ptr<double>() + d.numel()};
}

at::Tensor fixed_tensor(uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({1, 2, 3, 3}, g, at::kFloat);
}

// A smooth model that depends on its input and timestep (float32 or float64 alike).
at::Tensor synthetic_model(const at::Tensor& input, double t) { return 0.5 * at::tanh(input) + 0.0004 * t - 0.1; }

// The denoising loop of a pipeline: one model call per timestep.
at::Tensor run(Scheduler& s, at::Tensor x, const Model& model, at::Generator& generator) {
  for (double t : s.timesteps()) x = s.step(model(s.scale_model_input(x, t), t), t, x, generator);
  return x;
}
at::Tensor run(Scheduler& s, const at::Tensor& x, const Model& model) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);  // unused by deterministic schedulers
  return run(s, x, model, g);
}

void expect_close(const at::Tensor& actual, const at::Tensor& expected, double rel) {
  const double scale = std::max(1.0, expected.abs().max().item<double>());
  EXPECT_TENSOR_NEAR(actual.to(at::kDouble), expected.to(at::kDouble), rel * scale);
}

std::string error_of(const std::function<void()>& f) {
  try { f(); } catch (const tide::Error& e) { return e.what(); }
  return "";
}

TEST(Schedulers, NamesAndUnknownName) {
  const std::vector<std::string> expected = {"pndm", "ddim", "ddpm", "euler", "euler-a",
                                             "lms",  "heun", "dpm++2m", "dpm++3m", "unipc",
                                             "lcm",  "tcd"};
  EXPECT_EQ(tide::schedulers::scheduler_names(), expected);
  for (const auto& name : expected) EXPECT_EQ(make(name)->name(), name);
  const std::string msg = error_of([] { make("warp"); });
  EXPECT_NE(msg.find("warp"), std::string::npos);
  for (const auto& name : expected) EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

TEST(Schedulers, KarrasOnlyWhereDiffusersHasIt) {
  SchedulerOptions karras;
  karras.karras = true;
  for (const char* name : {"pndm", "ddim", "ddpm", "euler-a"}) {
    const std::string msg = error_of([&] { make(name, sd_config(), karras); });
    EXPECT_NE(msg.find("Karras"), std::string::npos) << name << ": " << msg;
  }
  for (const char* name : {"euler", "lms", "heun", "dpm++2m", "dpm++3m", "unipc"}) EXPECT_NO_THROW(make(name, sd_config(), karras));
}

TEST(Schedulers, OptionAndConfigErrors) {
  SchedulerOptions eta;
  eta.eta = 0.5;
  EXPECT_NE(error_of([&] { make("euler", sd_config(), eta); }).find("eta"), std::string::npos);
  EXPECT_NO_THROW(make("ddim", sd_config(), eta));
  EXPECT_NE(error_of([] { make("ddim", sd_config({{"beta_schedule", "cubic"}})); }).find("beta_schedule"), std::string::npos);
  EXPECT_NE(error_of([] { make("euler", sd_config({{"timestep_spacing", "random"}})); }).find("timestep_spacing"),
            std::string::npos);
  EXPECT_NE(error_of([] { make("euler-a", sd_config({{"prediction_type", "sample"}})); }).find("prediction_type"),
            std::string::npos);
  EXPECT_NE(error_of([] { make("euler", sd_config({{"use_beta_sigmas", true}})); }).find("use_beta_sigmas"),
            std::string::npos);
  EXPECT_NE(error_of([] { make("", json{{"_class_name", "KDPM2DiscreteScheduler"}}); }).find("KDPM2"), std::string::npos);
  // A huge training schedule (found by fuzzing: it took minutes and gigabytes) or too short a one.
  for (const char* name : {"pndm", "euler", "dpm++2m"})
    for (int n : {2000000000, 1})
      EXPECT_NE(error_of([&] { make(name, sd_config({{"num_train_timesteps", n}})); }).find("num_train_timesteps"),
                std::string::npos) << name << " " << n;
  // Betas outside [0, 1] (a huge beta_start overflowed float32 inside libtorch: found by fuzzing).
  for (const auto& [key, value] : {std::pair<const char*, double>{"beta_start", 8.5e304}, {"beta_end", -0.1}})
    EXPECT_NE(error_of([&] { make("euler", sd_config({{key, value}})); }).find(key), std::string::npos) << key;
  EXPECT_NE(error_of([] { make("ddim", sd_config({{"trained_betas", std::vector<double>(1000, 2.0)}})); })
                .find("trained_betas"),
            std::string::npos);
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_THROW(make("ddim")->step(fixed_tensor(1), 981, fixed_tensor(2), g), tide::Error);  // before set_timesteps
  auto euler = make("euler");
  euler->set_timesteps(5);
  EXPECT_THROW(euler->step(fixed_tensor(1), 123.0, fixed_tensor(2), g), tide::Error);  // not a timestep of the schedule
}

TEST(Schedulers, OwnClassFromConfig) {
  const std::pair<const char*, const char*> classes[] = {
      {"PNDMScheduler", "pndm"}, {"DDIMScheduler", "ddim"}, {"DDPMScheduler", "ddpm"},
      {"EulerDiscreteScheduler", "euler"}, {"EulerAncestralDiscreteScheduler", "euler-a"},
      {"LMSDiscreteScheduler", "lms"}, {"HeunDiscreteScheduler", "heun"},
      {"DPMSolverMultistepScheduler", "dpm++2m"}, {"UniPCMultistepScheduler", "unipc"},
      {"LCMScheduler", "lcm"}, {"TCDScheduler", "tcd"}};
  for (const auto& [cls, name] : classes) EXPECT_EQ(make("", sd_config({{"_class_name", cls}}))->name(), name);
  EXPECT_EQ(make("", sd_config({{"_class_name", "DPMSolverMultistepScheduler"}, {"solver_order", 3}}))->name(), "dpm++3m");
}

TEST(Schedulers, BetaSchedules) {
  // scaled_linear: betas = linspace(sqrt(0.00085), sqrt(0.012))^2, the Stable Diffusion schedule
  const std::vector<double> sd = values(make("ddim")->alphas_cumprod());
  ASSERT_EQ(sd.size(), 1000u);
  EXPECT_NEAR(sd[0], 1 - 0.00085, 1e-7);
  double prod = 1;
  for (int i = 0; i < 1000; ++i) {
    const double b = std::pow(std::sqrt(0.00085) + i * (std::sqrt(0.012) - std::sqrt(0.00085)) / 999, 2);
    prod *= 1 - b;
    EXPECT_NEAR(sd[i], prod, 2e-6 * prod + 1e-9) << i;
  }
  // linear with the class defaults (1e-4 .. 0.02)
  const std::vector<double> lin = values(make("ddpm", json{{"_class_name", "DDPMScheduler"}})->alphas_cumprod());
  prod = 1;
  for (int i = 0; i < 1000; ++i) {
    prod *= 1 - (1e-4 + i * (0.02 - 1e-4) / 999);
    EXPECT_NEAR(lin[i], prod, 2e-6 * prod + 1e-9) << i;
  }
  // squaredcos_cap_v2: alphas_cumprod telescopes to alpha_bar(t + 1) / alpha_bar(0) until beta hits 0.999
  const std::vector<double> cos = values(make("euler", sd_config({{"beta_schedule", "squaredcos_cap_v2"}}))->alphas_cumprod());
  auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
  for (int i : {0, 100, 500, 900, 990}) EXPECT_NEAR(cos[i], alpha_bar((i + 1) / 1000.0) / alpha_bar(0), 1e-5) << i;
  // rescale_betas_zero_snr: the last alpha product is 0 (DDIM) or 2^-24 (sigma schedulers, finite first sigma)
  EXPECT_EQ(values(make("ddim", sd_config({{"rescale_betas_zero_snr", true}}))->alphas_cumprod())[999], 0.0);
  auto euler = make("euler", sd_config({{"rescale_betas_zero_snr", true}, {"timestep_spacing", "trailing"}}));
  EXPECT_EQ(values(euler->alphas_cumprod())[999], std::pow(2.0, -24));
  EXPECT_NEAR(values(euler->alphas_cumprod())[0], sd[0], 1e-4);
  euler->set_timesteps(10);
  EXPECT_NEAR(euler->sigmas()[0], 4096.0, 1.0);  // sqrt((1 - 2^-24) / 2^-24)
}

TEST(Schedulers, TimestepSpacings) {
  auto ddim = make("ddim");
  ddim->set_timesteps(10);
  EXPECT_EQ(ddim->timesteps(), (std::vector<double>{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}));
  ddim = make("ddim", sd_config({{"timestep_spacing", "trailing"}}));
  ddim->set_timesteps(3);
  EXPECT_EQ(ddim->timesteps(), (std::vector<double>{999, 666, 332}));  // round(1000 - k * 333.33) - 1
  ddim = make("ddim", sd_config({{"timestep_spacing", "linspace"}}));
  ddim->set_timesteps(4);
  EXPECT_EQ(ddim->timesteps(), (std::vector<double>{999, 666, 333, 0}));
  EXPECT_TRUE(ddim->sigmas().empty());

  auto euler = make("euler", sd_config({{"timestep_spacing", "linspace"}}));
  euler->set_timesteps(4);
  EXPECT_EQ(euler->timesteps(), (std::vector<double>{999, 666, 333, 0}));
  EXPECT_EQ(euler->sigmas().size(), 5u);
  EXPECT_EQ(euler->sigmas().back(), 0.0);
  euler->set_timesteps(3);  // linspace keeps float32 fractions
  EXPECT_EQ(euler->timesteps(), (std::vector<double>{999, 499.5, 0}));

  auto pndm = make("pndm");
  pndm->set_timesteps(10);  // PLMS: the second timestep twice, N + 1 calls
  EXPECT_EQ(pndm->timesteps(), (std::vector<double>{901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1}));
  pndm = make("pndm", sd_config({{"skip_prk_steps", false}}));
  pndm->set_timesteps(10);  // 12 Runge-Kutta calls over the last 4 timesteps, then PLMS
  EXPECT_EQ(pndm->timesteps(), (std::vector<double>{901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501,
                                                    401, 301, 201, 101, 1}));

  auto heun = make("heun");
  heun->set_timesteps(4);  // two calls per step except the first
  EXPECT_EQ(heun->timesteps(), (std::vector<double>{751, 501, 501, 251, 251, 1, 1}));
  const auto hs = heun->sigmas();
  ASSERT_EQ(hs.size(), 8u);
  EXPECT_EQ(hs[1], hs[2]);
  EXPECT_EQ(hs.back(), 0.0);

  for (const char* name : {"dpm++2m", "unipc"}) {
    auto s = make(name);
    s->set_timesteps(20);  // leading over num_inference_steps + 1 points
    EXPECT_EQ(s->timesteps().front(), 941);
    EXPECT_EQ(s->timesteps().back(), 48);
    s = make(name, sd_config({{"timestep_spacing", "linspace"}}));
    s->set_timesteps(4);
    EXPECT_EQ(s->timesteps(), (std::vector<double>{999, 749, 500, 250}));
    EXPECT_EQ(s->sigmas().size(), 5u);
  }
}

TEST(Schedulers, InitNoiseSigma) {  // sqrt(max sigma^2 + 1) for "leading", max sigma for "linspace"
  auto leading = make("euler"), linspace = make("euler", sd_config({{"timestep_spacing", "linspace"}}));
  leading->set_timesteps(20), linspace->set_timesteps(20);
  EXPECT_NEAR(leading->init_noise_sigma(), std::hypot(leading->sigmas()[0], 1.0), 1e-5);
  EXPECT_EQ(linspace->init_noise_sigma(), linspace->sigmas()[0]);
  EXPECT_NEAR(linspace->sigmas()[0], 14.6146, 1e-3);  // SD's largest training sigma
  EXPECT_EQ(make("ddim")->init_noise_sigma(), 1.0);
}

TEST(Schedulers, KarrasSigmas) {
  SchedulerOptions karras;
  karras.karras = true;
  const std::vector<double> train = [] {
    std::vector<double> ac = values(make("ddim")->alphas_cumprod()), s;
    for (double a : ac) s.push_back(std::sqrt((1 - a) / a));
    return s;
  }();
  for (const char* name : {"dpm++2m", "unipc"}) {  // the full training range, timesteps rounded
    auto s = make(name, sd_config(), karras);
    s->set_timesteps(20);
    const auto sig = s->sigmas();
    EXPECT_NEAR(sig.front(), train.back(), 1e-5 * train.back()) << name;
    EXPECT_NEAR(sig[19], train.front(), 1e-5 * train.front()) << name;
    EXPECT_EQ(sig.back(), 0.0);
    EXPECT_EQ(s->timesteps().front(), 999);
    EXPECT_EQ(s->timesteps().back(), 0);
    for (size_t i = 1; i < 20; ++i) {
      EXPECT_LT(sig[i], sig[i - 1]);
      // rho = 7: sigma^(1/7) is linear in the step
      const double d0 = std::pow(sig[i], 1 / 7.0) - std::pow(sig[i - 1], 1 / 7.0);
      EXPECT_NEAR(d0, (std::pow(sig[19], 1 / 7.0) - std::pow(sig[0], 1 / 7.0)) / 19, 1e-6);
    }
  }
  auto euler = make("euler", sd_config(), karras);  // the interpolated end points, float timesteps
  euler->set_timesteps(10);
  auto plain = make("euler");
  plain->set_timesteps(10);
  EXPECT_NEAR(euler->sigmas()[0], plain->sigmas()[0], 1e-5);
  EXPECT_NEAR(euler->sigmas()[9], plain->sigmas()[9], 1e-6);
  EXPECT_NEAR(euler->timesteps()[0], 901, 1e-3);
  EXPECT_NEAR(euler->timesteps()[9], 1, 1e-3);
  EXPECT_NE(euler->timesteps()[5], std::round(euler->timesteps()[5]));
}

// DDIM: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps + std * noise, std = eta * sqrt(variance (16)).
TEST(Schedulers, DdimMatchesClosedForm) {
  for (const auto& [prediction, eta] : std::vector<std::pair<std::string, double>>{
           {"epsilon", 0.0}, {"v_prediction", 0.0}, {"epsilon", 1.0}}) {
    SchedulerOptions options;
    options.eta = eta;
    auto s = make("ddim", sd_config({{"prediction_type", prediction}}), options);
    s->set_timesteps(12);
    const std::vector<double> ac = values(s->alphas_cumprod());
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(13), ref_gen = gen.clone();
    const at::Tensor start = fixed_tensor(1);
    at::Tensor x = start.to(at::kDouble);
    for (double t : s->timesteps()) {
      const double a = ac[int(t)], prev = t - 1000 / 12, ap = prev >= 0 ? ac[int(prev)] : ac[0];
      const double std_dev = eta * std::sqrt((1 - ap) / (1 - a) * (1 - a / ap));
      const at::Tensor out = synthetic_model(x, t);
      at::Tensor eps = out, x0_pred = (x - std::sqrt(1 - a) * out) / std::sqrt(a);
      if (prediction == "v_prediction") {
        x0_pred = std::sqrt(a) * x - std::sqrt(1 - a) * out;
        eps = std::sqrt(a) * out + std::sqrt(1 - a) * x;
      }
      x = std::sqrt(ap) * x0_pred + std::sqrt(1 - ap - std_dev * std_dev) * eps;
      if (eta > 0) x = x + std_dev * at::randn({1, 2, 3, 3}, ref_gen, at::kFloat).to(at::kDouble);
    }
    expect_close(run(*s, start, synthetic_model, gen), x, 1e-5);
  }
}

// Euler: x += (x - denoised) / sigma * (sigma_next - sigma), with the model fed x / sqrt(sigma^2 + 1).
TEST(Schedulers, EulerMatchesClosedForm) {
  for (const char* prediction : {"epsilon", "v_prediction", "sample"}) {
    auto s = make("euler", sd_config({{"prediction_type", prediction}}));
    s->set_timesteps(15);
    const auto sig = s->sigmas();
    const at::Tensor start = fixed_tensor(2) * s->init_noise_sigma();
    at::Tensor x = start.to(at::kDouble);
    for (size_t i = 0; i < s->timesteps().size(); ++i) {
      const double sg = sig[i], c = std::sqrt(sg * sg + 1);
      const at::Tensor out = synthetic_model(x / c, s->timesteps()[i]);
      at::Tensor denoised = x - sg * out;
      if (std::string(prediction) == "v_prediction") denoised = out * (-sg / c) + x / (sg * sg + 1);
      if (std::string(prediction) == "sample") denoised = out;
      x = x + (x - denoised) / sg * (sig[i + 1] - sg);
    }
    expect_close(run(*s, start, synthetic_model), x, 1e-5);
  }
}

// Heun: an Euler step to the next sigma, then the average of both derivatives from the same start.
TEST(Schedulers, HeunMatchesClosedForm) {
  const int steps = 6;
  auto s = make("heun");
  s->set_timesteps(steps);
  // sigmas [s0, s1, s1, ..., s5, s5, 0] and timesteps [t0, t1, t1, ..., t5, t5]: the distinct values
  const auto all_sigmas = s->sigmas();
  const auto& ts = s->timesteps();
  std::vector<double> sig, t;
  for (int k = 0; k <= steps; ++k) sig.push_back(all_sigmas[k == 0 ? 0 : 2 * k - 1]);
  for (int k = 0; k < steps; ++k) t.push_back(ts[k == 0 ? 0 : 2 * k - 1]);
  const at::Tensor start = fixed_tensor(3) * s->init_noise_sigma();
  at::Tensor x = start.to(at::kDouble);
  auto eps = [](const at::Tensor& v, double sg, double tt) { return synthetic_model(v / std::sqrt(sg * sg + 1), tt); };
  for (int k = 0; k < steps; ++k) {
    const at::Tensor d = eps(x, sig[k], t[k]);
    const at::Tensor x_euler = x + d * (sig[k + 1] - sig[k]);
    x = sig[k + 1] == 0 ? x_euler : x + (d + eps(x_euler, sig[k + 1], t[k + 1])) / 2 * (sig[k + 1] - sig[k]);
  }
  expect_close(run(*s, start, synthetic_model), x, 1e-5);
}

// LMS: coefficients are exact integrals of the Lagrange basis polynomials over [sigma_i, sigma_i+1].
TEST(Schedulers, LmsMatchesExactIntegrals) {
  auto s = make("lms");
  s->set_timesteps(10);
  const auto sig = s->sigmas();
  const at::Tensor start = fixed_tensor(4) * s->init_noise_sigma();
  at::Tensor x = start.to(at::kDouble);
  std::vector<at::Tensor> d;
  for (int i = 0; i < 10; ++i) {
    const double c = std::sqrt(sig[i] * sig[i] + 1);
    d.push_back(synthetic_model(x / c, s->timesteps()[i]));  // epsilon: the derivative is the model output
    const int order = std::min(i + 1, 4);
    at::Tensor sum = at::zeros_like(x);
    for (int k = 0; k < order; ++k) {
      std::vector<double> poly = {1.0};  // coefficients of prod_{j != k} (tau - s_j) / (s_k - s_j)
      for (int j = 0; j < order; ++j) {
        if (j == k) continue;
        const double den = sig[i - k] - sig[i - j];
        std::vector<double> next(poly.size() + 1, 0.0);
        for (size_t m = 0; m < poly.size(); ++m) {
          next[m + 1] += poly[m] / den;
          next[m] -= poly[m] * sig[i - j] / den;
        }
        poly = next;
      }
      double integral = 0;
      for (size_t m = 0; m < poly.size(); ++m)
        integral += poly[m] * (std::pow(sig[i + 1], m + 1) - std::pow(sig[i], m + 1)) / (m + 1);
      sum = sum + integral * d[d.size() - 1 - k];
    }
    x = x + sum;
  }
  expect_close(run(*s, start, synthetic_model), x, 1e-5);
}

// DPM-Solver++ (2M / 3M, midpoint): data-prediction multistep updates in lambda = -log(sigma).
void check_dpm_solver(const std::string& name, int order, int steps) {
  auto s = make(name);
  s->set_timesteps(steps);
  const auto sig = s->sigmas();
  const at::Tensor start = fixed_tensor(5);
  at::Tensor x = start.to(at::kDouble);
  std::vector<at::Tensor> m;
  auto alpha = [](double sg) { return 1 / std::sqrt(sg * sg + 1); };
  auto lam = [](double sg) { return -std::log(sg); };
  for (int i = 0; i < steps; ++i) {
    const double a = alpha(sig[i]), sg = sig[i] * a;
    m.push_back((x - sg * synthetic_model(x, s->timesteps()[i])) / a);  // x0 prediction
    if (sig[i + 1] == 0) {  // the final step is first order to sigma 0: the x0 prediction itself
      x = m.back();
      continue;
    }
    const double at_ = alpha(sig[i + 1]), st = sig[i + 1] * at_;
    const double h = lam(sig[i + 1]) - lam(sig[i]), e = std::exp(-h) - 1;
    const int done = std::min(i, order);
    const bool second_last = i == steps - 2 && steps < 15;
    const int k = (done < 1) ? 1 : (order == 2 || done < 2 || second_last) ? 2 : 3;
    x = (st / sg) * x - (at_ * e) * m[i];
    if (k >= 2) {
      const double r0 = (lam(sig[i]) - lam(sig[i - 1])) / h;
      const at::Tensor D1_0 = (m[i] - m[i - 1]) / r0;
      if (k == 2) {
        x = x - 0.5 * (at_ * e) * D1_0;
      } else {
        const double r1 = (lam(sig[i - 1]) - lam(sig[i - 2])) / h;
        const at::Tensor D1_1 = (m[i - 1] - m[i - 2]) / r1;
        const at::Tensor D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
        const at::Tensor D2 = (D1_0 - D1_1) / (r0 + r1);
        x = x + (at_ * (e / h + 1)) * D1 - (at_ * ((e + h) / (h * h) - 0.5)) * D2;
      }
    }
  }
  expect_close(run(*s, start, synthetic_model), x, 2e-5);
}

TEST(Schedulers, DpmSolver2MMatchesReference) { check_dpm_solver("dpm++2m", 2, 20); }
TEST(Schedulers, DpmSolver3MMatchesReference) {
  check_dpm_solver("dpm++3m", 3, 20);
  check_dpm_solver("dpm++3m", 3, 8);  // fewer than 15 steps: second order at the second-last step
}

// UniPC bh2, order 2, x0 form: predictor UniP and corrector UniC (the corrector uses this step's model
// output at the predicted sample).
TEST(Schedulers, UniPcMatchesReference) {
  const int steps = 10;
  auto s = make("unipc");
  s->set_timesteps(steps);
  const auto sig = s->sigmas();
  const at::Tensor start = fixed_tensor(6);
  auto alpha = [](double sg) { return 1 / std::sqrt(sg * sg + 1); };
  auto lam = [](double sg) { return -std::log(sg); };
  at::Tensor x = start.to(at::kDouble), last;
  std::vector<at::Tensor> m;
  int prev_order = 0;
  for (int i = 0; i < steps; ++i) {
    const double a = alpha(sig[i]);
    m.push_back((x - sig[i] * a * synthetic_model(x, s->timesteps()[i])) / a);
    if (i > 0) {  // UniC from sigma[i-1] to sigma[i]
      const double h = lam(sig[i]) - lam(sig[i - 1]), hh = -h, phi = std::expm1(hh), B = std::expm1(hh);
      const double at_ = alpha(sig[i]);
      const at::Tensor base = (sig[i] * at_) / (sig[i - 1] * alpha(sig[i - 1])) * last - at_ * phi * m[i - 1];
      at::Tensor corr;
      if (prev_order == 1) {
        corr = 0.5 * (m[i] - m[i - 1]);
      } else {
        const double rk = (lam(sig[i - 2]) - lam(sig[i - 1])) / h;
        const double k1 = phi / hh - 1, k2 = k1 / hh - 0.5;
        const double b0 = k1 / B, b1 = k2 * 2 / B;  // solve [[1, 1], [rk, 1]] rho = b
        const double rho0 = (b0 - b1) / (1 - rk), rho1 = b0 - rho0;
        corr = rho0 * (m[i - 2] - m[i - 1]) / rk + rho1 * (m[i] - m[i - 1]);
      }
      x = base - at_ * B * corr;
    }
    const int order = std::min({2, steps - i, i + 1});
    last = x;
    const double h = lam(sig[i + 1]) - lam(sig[i]), hh = -h;
    const double at_ = sig[i + 1] == 0 ? 1.0 : alpha(sig[i + 1]);
    const double ratio = sig[i + 1] * at_ / (sig[i] * alpha(sig[i]));
    x = ratio * x - at_ * std::expm1(hh) * m[i];
    if (order == 2) {
      const double rk = (lam(sig[i - 1]) - lam(sig[i])) / h;
      x = x - at_ * std::expm1(hh) * 0.5 * ((m[i - 1] - m[i]) / rk);
    }
    prev_order = order;
  }
  expect_close(run(*s, start, synthetic_model), x, 2e-5);
}

// PNDM with skip_prk_steps (PLMS): formula (9) with Adams-Bashforth combinations of the model outputs
// (v outputs are combined as they are and converted to noise at the current timestep, like diffusers).
TEST(Schedulers, PndmPlmsMatchesReference) {
  for (const std::string prediction : {"epsilon", "v_prediction"}) {
    auto s = make("pndm", sd_config({{"prediction_type", prediction}}));
    s->set_timesteps(10);
    const std::vector<double> ac = values(s->alphas_cumprod());
    auto transfer = [&](const at::Tensor& x, double t, double tp, at::Tensor e) {
      const double a = ac[int(t)], ap = tp >= 0 ? ac[int(tp)] : ac[0];
      if (prediction == "v_prediction") e = std::sqrt(a) * e + std::sqrt(1 - a) * x;
      return std::sqrt(ap / a) * x - (ap - a) * e / (a * std::sqrt(1 - ap) + std::sqrt(a * (1 - a) * ap));
    };
    const at::Tensor start = fixed_tensor(7);
    at::Tensor x = start.to(at::kDouble), first;
    std::vector<at::Tensor> ets;
    const auto& ts = s->timesteps();
    for (size_t c = 0; c < ts.size(); ++c) {
      const at::Tensor e = synthetic_model(x, ts[c]);
      if (c == 1) {  // the first interval again, with the average of both outputs
        x = transfer(first, ts[c] + 100, ts[c], (e + ets[0]) / 2);
        continue;
      }
      if (c == 0) first = x;
      ets.push_back(e);
      const size_t n = ets.size();
      at::Tensor comb = n == 1 ? e : n == 2 ? (3 * ets[1] - ets[0]) / 2
                                   : n == 3 ? (23 * ets[2] - 16 * ets[1] + 5 * ets[0]) / 12
                                            : (55 * ets[n - 1] - 59 * ets[n - 2] + 37 * ets[n - 3] - 9 * ets[n - 4]) / 24;
      x = transfer(x, ts[c], ts[c] - 100, comb);
    }
    expect_close(run(*s, start, synthetic_model), x, 1e-5);
  }
}

// DDPM: posterior mean plus sqrt(variance) times noise drawn from the generator in every step.
TEST(Schedulers, DdpmMatchesPosterior) {
  auto s = make("ddpm");
  s->set_timesteps(10);
  const std::vector<double> ac = values(s->alphas_cumprod());
  const auto& ts = s->timesteps();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  at::Generator ref_gen = gen.clone();
  const at::Tensor start = fixed_tensor(8);
  at::Tensor x = start.to(at::kDouble);
  for (size_t i = 0; i < ts.size(); ++i) {
    const double a = ac[int(ts[i])], ap = i + 1 < ts.size() ? ac[int(ts[i + 1])] : 1.0;
    const double ca = a / ap, cb = 1 - ca;
    const at::Tensor x0 = (x - std::sqrt(1 - a) * synthetic_model(x, ts[i])) / std::sqrt(a);
    x = std::sqrt(ap) * cb / (1 - a) * x0 + std::sqrt(ca) * (1 - ap) / (1 - a) * x;
    const at::Tensor noise = at::randn({1, 2, 3, 3}, ref_gen, at::kFloat).to(at::kDouble);
    x = x + std::sqrt(std::max((1 - ap) / (1 - a) * cb, 1e-20)) * noise;
  }
  expect_close(run(*s, start, synthetic_model, gen), x, 1e-5);
}

// Euler ancestral: Euler to sigma_down, plus noise * sigma_up with sigma_up^2 + sigma_down^2 = sigma_next^2.
TEST(Schedulers, EulerAncestralMatchesReference) {
  auto s = make("euler-a");
  s->set_timesteps(10);
  const auto sig = s->sigmas();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(12);
  at::Generator ref_gen = gen.clone();
  const at::Tensor start = fixed_tensor(9) * s->init_noise_sigma();
  at::Tensor x = start.to(at::kDouble);
  for (int i = 0; i < 10; ++i) {
    const double from = sig[i], to = sig[i + 1];
    const double up = std::sqrt(to * to * (from * from - to * to) / (from * from)), down = std::sqrt(to * to - up * up);
    x = x + synthetic_model(x / std::sqrt(from * from + 1), s->timesteps()[i]) * (down - from);
    x = x + at::randn({1, 2, 3, 3}, ref_gen, at::kFloat).to(at::kDouble) * up;
  }
  expect_close(run(*s, start, synthetic_model, gen), x, 1e-5);
}

// x0 clipping and dynamic thresholding (a single DDIM step to alpha = 1 returns the processed x0).
TEST(Schedulers, ClipAndThreshold) {
  const at::Tensor five = at::full({1, 2, 3, 3}, 5.0, at::kFloat);
  const Model constant = [&](const at::Tensor&, double) { return five; };
  auto clip = make("ddim", sd_config({{"prediction_type", "sample"}, {"set_alpha_to_one", true}, {"clip_sample", true},
                                      {"clip_sample_range", 2.0}}));
  clip->set_timesteps(1);
  EXPECT_TENSOR_NEAR(run(*clip, fixed_tensor(1), constant), at::full_like(five, 2.0), 1e-6);
  // the 99.5% quantile of |x0| (5) clamped to [1, sample_max_value = 3]; x0 clamped to +-3 and divided by 3
  auto thr = make("ddim", sd_config({{"prediction_type", "sample"}, {"set_alpha_to_one", true}, {"thresholding", true},
                                     {"sample_max_value", 3.0}}));
  thr->set_timesteps(1);
  EXPECT_TENSOR_NEAR(run(*thr, fixed_tensor(1), constant), at::ones_like(five), 1e-6);
}

// Zero terminal SNR with trailing timesteps and v_prediction (SD 2.1-style): the first step starts at pure noise.
TEST(Schedulers, ZeroTerminalSnrRuns) {
  const json config = sd_config({{"rescale_betas_zero_snr", true}, {"timestep_spacing", "trailing"},
                                 {"prediction_type", "v_prediction"}});
  for (const char* name : {"ddim", "euler", "dpm++2m", "unipc"}) {
    auto s = make(name, config);
    s->set_timesteps(8);
    EXPECT_EQ(s->timesteps().front(), 999);
    const at::Tensor out = run(*s, fixed_tensor(2) * s->init_noise_sigma(), synthetic_model);
    EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << name;
  }
}

// With a perfect denoiser every scheduler ends at x0, whatever the prediction type. (Not PNDM with
// v_prediction: diffusers combines raw v outputs of different timesteps and converts them at the current one.)
TEST(Schedulers, PerfectDenoiserReachesX0) {
  const at::Tensor x0 = fixed_tensor(20).to(at::kDouble), n = fixed_tensor(21).to(at::kDouble);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"pndm", {"epsilon"}}, {"ddim", {"epsilon", "v_prediction", "sample"}},
      {"ddpm", {"epsilon", "v_prediction", "sample"}}, {"euler", {"epsilon", "v_prediction", "sample"}},
      {"euler-a", {"epsilon", "v_prediction"}}, {"lms", {"epsilon", "v_prediction", "sample"}},
      {"heun", {"epsilon", "v_prediction", "sample"}}, {"dpm++2m", {"epsilon", "v_prediction", "sample"}},
      {"dpm++3m", {"epsilon", "v_prediction", "sample"}}, {"unipc", {"epsilon", "v_prediction", "sample"}}};
  for (const auto& [name, predictions] : cases) {
    for (const auto& prediction : predictions) {
      for (bool prk : {false, true}) {
        if (prk && name != "pndm") continue;
        auto s = make(name, sd_config({{"prediction_type", prediction}, {"set_alpha_to_one", true},
                                       {"skip_prk_steps", !prk}}));
        s->set_timesteps(12);
        const std::vector<double> ac = values(s->alphas_cumprod());
        const bool sigma_based = !s->sigmas().empty() && name != "dpm++2m" && name != "dpm++3m" && name != "unipc";
        // The model sees x_t = sqrt(a) x0 + sqrt(1 - a) eps (the scaled input of the sigma schedulers).
        const Model oracle = [&](const at::Tensor& input, double t) {
          const double a = ac[static_cast<int>(t)];
          const at::Tensor eps = (input.to(at::kDouble) - std::sqrt(a) * x0) / std::sqrt(1 - a);
          at::Tensor out = prediction == "epsilon" ? eps : prediction == "sample" ? x0 : std::sqrt(a) * eps - std::sqrt(1 - a) * x0;
          return out.to(at::kFloat);
        };
        const double a0 = ac[static_cast<int>(s->timesteps()[0])];
        const at::Tensor start = sigma_based ? x0 + std::sqrt((1 - a0) / a0) * n : std::sqrt(a0) * x0 + std::sqrt(1 - a0) * n;
        expect_close(run(*s, start.to(at::kFloat), oracle), x0, 1e-4);
        if (::testing::Test::HasFailure()) FAIL() << name << " " << prediction << (prk ? " prk" : "");
      }
    }
  }
}

TEST(Schedulers, AddNoiseAndVelocity) {
  auto s = make("ddpm");
  const std::vector<double> ac = values(s->alphas_cumprod());
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor x = at::randn({3, 4, 2, 2}, g, at::kFloat), noise = at::randn({3, 4, 2, 2}, g, at::kFloat);
  const at::Tensor t = at::tensor(std::vector<int64_t>{0, 500, 999});
  const at::Tensor noisy = s->add_noise(x, noise, t), v = s->get_velocity(x, noise, t);
  for (int b = 0; b < 3; ++b) {
    const double a = ac[t[b].item<int64_t>()];
    expect_close(noisy[b], std::sqrt(a) * x[b].to(at::kDouble) + std::sqrt(1 - a) * noise[b].to(at::kDouble), 1e-6);
    expect_close(v[b], std::sqrt(a) * noise[b].to(at::kDouble) - std::sqrt(1 - a) * x[b].to(at::kDouble), 1e-6);
  }
  EXPECT_THROW(s->add_noise(x, noise, at::tensor(std::vector<int64_t>{0, 1, 1000})), tide::Error);
  EXPECT_THROW(s->add_noise(x, noise, at::tensor(std::vector<float>{0, 1, 2})), tide::Error);
}

}  // namespace
