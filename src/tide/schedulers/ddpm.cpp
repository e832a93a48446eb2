// DDPMScheduler (diffusers 0.35): ancestral sampling of the DDPM paper (formulas 6, 7, 15); every
// step with t > 0 draws noise from the generator.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class Ddpm final : public Scheduler {
 public:
  explicit Ddpm(const Config& c) {
    name_ = "ddpm";
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    // "learned" / "learned_range" need a model that predicts its variance (twice the channels)
    variance_type_ = c.get_choice("variance_type", "fixed_small",
                                  {"fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"});
    clip_sample_ = c.get_bool("clip_sample", true);
    clip_sample_range_ = c.get_double("clip_sample_range", 1.0);
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);
    spacing_ = c.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);

    at::Tensor betas = make_betas(c, BetaDefaults{}, {"sigmoid"});
    if (c.get_bool("rescale_betas_zero_snr", false)) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = alphas_cumprod_from_betas(betas);
    one_ = at::scalar_tensor(1.0, at::kFloat);
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1 || n > num_train_timesteps_)
      throw Error("ddpm: the number of steps must be between 1 and num_train_timesteps (" +
                  std::to_string(num_train_timesteps_) + "), got " + std::to_string(n));
    num_inference_steps_ = n;
    timesteps_ = discrete_timesteps(spacing_, num_train_timesteps_, n, steps_offset_);
    step_index_ = 0;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator& generator) override {
    require_step_available();
    const int64_t t = std::llround(timestep);
    if (t < 0 || t >= num_train_timesteps_) throw Error("ddpm: timestep " + std::to_string(timestep) + " out of range");
    const int64_t prev_t = previous_timestep(timestep);

    const at::Tensor alpha_prod_t = alphas_cumprod_[t];
    const at::Tensor alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : one_;
    const at::Tensor beta_prod_t = at::rsub(alpha_prod_t, 1);
    const at::Tensor beta_prod_t_prev = at::rsub(alpha_prod_t_prev, 1);
    const at::Tensor current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
    const at::Tensor current_beta_t = at::rsub(current_alpha_t, 1);

    // x0 from the model output, formula (15)
    at::Tensor pred_original;
    if (prediction_type_ == "epsilon")
      pred_original = (sample - at::pow(beta_prod_t, 0.5) * model_output) / at::pow(alpha_prod_t, 0.5);
    else if (prediction_type_ == "sample")
      pred_original = model_output;
    else
      pred_original = at::pow(alpha_prod_t, 0.5) * sample - at::pow(beta_prod_t, 0.5) * model_output;
    if (thresholding_) {
      pred_original = threshold_sample(pred_original, dynamic_thresholding_ratio_, sample_max_value_);
    } else if (clip_sample_) {
      pred_original = pred_original.clamp(-clip_sample_range_, clip_sample_range_);
    }

    // mean of the posterior, formula (7)
    const at::Tensor original_coeff = (at::pow(alpha_prod_t_prev, 0.5) * current_beta_t) / beta_prod_t;
    const at::Tensor sample_coeff = at::pow(current_alpha_t, 0.5) * beta_prod_t_prev / beta_prod_t;
    at::Tensor prev = original_coeff * pred_original + sample_coeff * sample;

    if (t > 0) {
      const at::Tensor noise = at::randn(model_output.sizes(), generator, model_output.options());
      const at::Tensor variance = get_variance(timestep);
      if (variance_type_ == "fixed_small_log")
        prev = prev + variance * noise;
      else
        prev = prev + at::pow(variance, 0.5) * noise;
    }
    ++step_index_;
    return prev;
  }

 private:
  // The next timestep of the schedule, -1 after the last (diffusers' previous_timestep).
  int64_t previous_timestep(double timestep) const {
    for (size_t i = 0; i < timesteps_.size(); ++i)
      if (timesteps_[i] == timestep) return i + 1 < timesteps_.size() ? std::llround(timesteps_[i + 1]) : -1;
    throw Error("ddpm: timestep " + std::to_string(timestep) + " is not in the schedule");
  }

  at::Tensor get_variance(double timestep) const {
    const int64_t t = std::llround(timestep);
    const int64_t prev_t = previous_timestep(timestep);
    const at::Tensor alpha_prod_t = alphas_cumprod_[t];
    const at::Tensor alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : one_;
    const at::Tensor current_beta_t = at::rsub(alpha_prod_t / alpha_prod_t_prev, 1);
    // formulas (6) and (7); clamped because its log is taken
    at::Tensor variance = at::rsub(alpha_prod_t_prev, 1) / at::rsub(alpha_prod_t, 1) * current_beta_t;
    variance = at::clamp(variance, 1e-20);
    if (variance_type_ == "fixed_small_log") return at::exp(0.5 * at::log(variance));
    if (variance_type_ == "fixed_large") return current_beta_t;
    if (variance_type_ == "fixed_large_log") return at::log(current_beta_t);
    return variance;
  }

  std::string variance_type_, spacing_;
  bool clip_sample_ = true, thresholding_ = false;
  double clip_sample_range_ = 1.0, dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0;
  int steps_offset_ = 0;
  at::Tensor one_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddpm(const Config& config) { return std::make_unique<Ddpm>(config); }

}  // namespace tide::schedulers::detail
