// EulerAncestralDiscreteScheduler (diffusers 0.35): Euler steps to sigma_down plus fresh noise of
// size sigma_up, drawn from the generator in every step.
#include "tide/schedulers/sigma_scheduler.h"

namespace tide::schedulers::detail {

namespace {

class EulerAncestral final : public SigmaScheduler {
 public:
  // diffusers raises NotImplementedError for "sample"
  explicit EulerAncestral(const Config& c) : SigmaScheduler(c, "euler-a", {"epsilon", "v_prediction"}) {
    read_timestep_spacing(c);
    alphas_cumprod_ = sigma_alphas_cumprod(c);
    use_training_schedule();
  }

  void set_timesteps(int n) override {
    const auto [t, train] = start_set_timesteps(n);
    std::vector<double> sigmas = np_interp_index(t, train);
    sigmas.push_back(0.0);
    sigmas_ = float32_tensor(sigmas);
    timesteps_ = t;
    finish_set_timesteps();
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
};

}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral(const Config& config) {
  return std::make_unique<EulerAncestral>(config);
}

}  // namespace tide::schedulers::detail
