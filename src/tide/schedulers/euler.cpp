// EulerDiscreteScheduler (diffusers 0.35): Karras et al. Algorithm 2 with s_churn = 0.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class EulerDiscrete final : public Scheduler {
 public:
  explicit EulerDiscrete(const Config& c) : config_(c) {
    name_ = "euler";
    noise_form_ = NoiseForm::kSigma;
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "v_prediction", "sample", "original_sample"});
    interpolation_type_ = c.get_choice("interpolation_type", "linear", {"linear", "log_linear"});
    karras_ = c.get_bool("use_karras_sigmas", false);
    c.require_false("use_exponential_sigmas");
    c.require_false("use_beta_sigmas");
    spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
    timestep_type_ = c.get_choice("timestep_type", "discrete", {"discrete", "continuous"});
    steps_offset_ = c.get_int("steps_offset", 0);
    final_sigmas_type_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
    const bool zero_snr = c.get_bool("rescale_betas_zero_snr", false);

    at::Tensor betas = make_betas(c, BetaDefaults{});
    if (zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = alphas_cumprod_from_betas(betas);
    // close to 0 without being 0, so that the first sigma is finite (fp16's smallest subnormal)
    if (zero_snr) alphas_cumprod_[-1].fill_(std::pow(2.0, -24));

    // Before set_timesteps: the full training schedule, like diffusers' __init__.
    const at::Tensor train = at::pow(at::rsub(alphas_cumprod_, 1) / alphas_cumprod_, 0.5).flip(0);
    sigmas_ = at::cat({train, at::zeros({1}, train.options())});
    timesteps_ = continuous_v() ? log_timesteps(sigmas_.slice(0, 0, -1))
                                : reversed(to_float32_values(np_linspace(0, num_train_timesteps_ - 1,
                                                                         num_train_timesteps_)));
    init_noise_sigma_ = k_init_noise_sigma(sigmas_, spacing_);
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error("euler: the number of steps must be at least 1");
    num_inference_steps_ = n;
    std::vector<double> t = k_timesteps(spacing_, num_train_timesteps_, n, steps_offset_);
    const std::vector<double> train = train_sigmas(alphas_cumprod_);
    const std::vector<double> log_sigmas = log_float32(train);

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
      sigmas = karras_sigmas(lo, hi, n);
      t.clear();
      for (double s : sigmas) t.push_back(sigma_to_t(s, log_sigmas));
    }
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : train.front());
    sigmas_ = float32_tensor(sigmas);
    timesteps_ = continuous_v() ? log_timesteps(sigmas_.slice(0, 0, -1)) : to_float32_values(t);
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
  std::string interpolation_type_, spacing_, timestep_type_, final_sigmas_type_;
  bool karras_ = false;
  int steps_offset_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const Config& config) { return std::make_unique<EulerDiscrete>(config); }

}  // namespace tide::schedulers::detail
