// EulerDiscreteScheduler (diffusers 0.35): Karras et al. Algorithm 2 with s_churn = 0.
#include <cmath>

#include "tide/schedulers/sigma_scheduler.h"

namespace tide::schedulers::detail {

namespace {

class EulerDiscrete final : public SigmaScheduler {
 public:
  explicit EulerDiscrete(const Config& c)
      : SigmaScheduler(c, "euler", {"epsilon", "v_prediction", "sample", "original_sample"}), config_(c) {
    interpolation_type_ = c.get_choice("interpolation_type", "linear", {"linear", "log_linear"});
    karras_ = read_use_karras_sigmas(c);
    read_timestep_spacing(c);
    timestep_type_ = c.get_choice("timestep_type", "discrete", {"discrete", "continuous"});
    final_sigmas_type_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
    alphas_cumprod_ = sigma_alphas_cumprod(c);

    // Before set_timesteps: the full training schedule, like diffusers' __init__.
    use_training_schedule();
    if (continuous_v()) timesteps_ = log_timesteps(sigmas_.slice(0, 0, -1));
  }

  void set_timesteps(int n) override {
    auto [t, train] = start_set_timesteps(n);
    std::vector<double> sigmas;
    if (interpolation_type_ == "linear") {
      sigmas = np_interp_index(t, train);
    } else {  // log_linear: torch.linspace in float32 between the float32 log end points, then exp
      const auto f32 = at::TensorOptions().dtype(at::kFloat);
      sigmas = tensor_values(
          at::linspace(static_cast<float>(std::log(train.back())), static_cast<float>(std::log(train.front())), n + 1, f32)
              .exp());
    }
    if (karras_) {
      const auto [lo, hi] = karras_range(config_, sigmas.back(), sigmas.front());
      SigmaSchedule karras = karras_schedule(lo, hi, n, train);
      sigmas = std::move(karras.sigmas);
      t = std::move(karras.timesteps);
    }
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : train.front());
    sigmas_ = float32_tensor(sigmas);
    timesteps_ = continuous_v() ? log_timesteps(sigmas_.slice(0, 0, -1)) : to_float32_values(t);
    finish_set_timesteps();
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator&) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const at::Tensor sample = sample_in.to(at::kFloat);  // upcast like diffusers
    const at::Tensor sigma = sigmas_[step_index_];
    const at::Tensor sigma_hat = sigma * (0.0 + 1);  // gamma = 0 (s_churn = 0)
    const at::Tensor denoised = k_denoised(prediction_type_, model_output, sample, sigma_hat);
    const at::Tensor derivative = (sample - denoised) / sigma_hat;  // the ODE derivative
    const at::Tensor dt = sigmas_[step_index_ + 1] - sigma_hat;
    const at::Tensor prev = sample + derivative * dt;
    ++step_index_;
    return prev.to(model_output.scalar_type());
  }

 private:
  bool continuous_v() const { return timestep_type_ == "continuous" && prediction_type_ == "v_prediction"; }

  // EDM-style timesteps 0.25 * log(sigma) (float32) of timestep_type "continuous" with v_prediction,
  // one 0-dim tensor at a time like diffusers.
  static std::vector<double> log_timesteps(const at::Tensor& sigmas) {
    std::vector<double> t;
    for (int64_t i = 0; i < sigmas.size(0); ++i) t.push_back((at::log(sigmas[i]) * 0.25).item<double>());
    return t;
  }

  Config config_;
  std::string interpolation_type_, timestep_type_, final_sigmas_type_;
  bool karras_ = false;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const Config& config) { return std::make_unique<EulerDiscrete>(config); }

}  // namespace tide::schedulers::detail
