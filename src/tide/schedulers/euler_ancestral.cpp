// EulerAncestralDiscreteScheduler (diffusers 0.35): Euler steps to sigma_down plus fresh noise of
// size sigma_up, drawn from the generator in every step.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class EulerAncestral final : public Scheduler {
 public:
  explicit EulerAncestral(const Config& c) {
    name_ = "euler-a";
    noise_form_ = NoiseForm::kSigma;
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    // diffusers raises NotImplementedError for "sample"
    prediction_type_ = read_prediction_type(c, {"epsilon", "v_prediction"});
    spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);
    const bool zero_snr = c.get_bool("rescale_betas_zero_snr", false);

    at::Tensor betas = make_betas(c, BetaDefaults{});
    if (zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = alphas_cumprod_from_betas(betas);
    if (zero_snr) alphas_cumprod_[-1].fill_(std::pow(2.0, -24));  // keeps the first sigma finite

    const at::Tensor train = at::pow(at::rsub(alphas_cumprod_, 1) / alphas_cumprod_, 0.5).flip(0);
    sigmas_ = at::cat({train, at::zeros({1}, train.options())});
    timesteps_ = reversed(to_float32_values(np_linspace(0, num_train_timesteps_ - 1, num_train_timesteps_)));
    init_noise_sigma_ = k_init_noise_sigma(sigmas_, spacing_);
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error("euler-a: the number of steps must be at least 1");
    num_inference_steps_ = n;
    const std::vector<double> t = k_timesteps(spacing_, num_train_timesteps_, n, steps_offset_);
    std::vector<double> sigmas = np_interp_index(t, train_sigmas(alphas_cumprod_));
    sigmas.push_back(0.0);
    sigmas_ = float32_tensor(sigmas);
    timesteps_ = t;
    init_noise_sigma_ = k_init_noise_sigma(sigmas_, spacing_);
    step_index_ = -1;
    begin_index_ = -1;
  }

  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    return k_scale_model_input(sample, sigmas_[step_index_]);
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator& generator) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const at::Tensor sample = sample_in.to(at::kFloat);
    const at::Tensor sigma = sigmas_[step_index_];
    const at::Tensor denoised = k_denoised(prediction_type_, model_output, sample, sigma);

    const at::Tensor sigma_from = sigmas_[step_index_];
    const at::Tensor sigma_to = sigmas_[step_index_ + 1];
    const at::Tensor sigma_up =
        at::pow(at::pow(sigma_to, 2) * (at::pow(sigma_from, 2) - at::pow(sigma_to, 2)) / at::pow(sigma_from, 2), 0.5);
    const at::Tensor sigma_down = at::pow(at::pow(sigma_to, 2) - at::pow(sigma_up, 2), 0.5);

    const at::Tensor derivative = (sample - denoised) / sigma;
    const at::Tensor dt = sigma_down - sigma;
    at::Tensor prev = sample + derivative * dt;
    const at::Tensor noise = at::randn(model_output.sizes(), generator, model_output.options());
    prev = prev + noise * sigma_up;
    ++step_index_;
    return prev.to(model_output.scalar_type());
  }

 private:
  std::string spacing_;
  int steps_offset_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral(const Config& config) {
  return std::make_unique<EulerAncestral>(config);
}

}  // namespace tide::schedulers::detail
