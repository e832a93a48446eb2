// DDIMScheduler (diffusers 0.35), formulas (12) and (16) of the DDIM paper; eta > 0 adds noise drawn
// from the generator in every step.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class Ddim final : public Scheduler {
 public:
  Ddim(const Config& c, double eta) : eta_(eta) {
    name_ = "ddim";
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    clip_sample_ = c.get_bool("clip_sample", true);
    clip_sample_range_ = c.get_double("clip_sample_range", 1.0);
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);
    spacing_ = c.get_choice("timestep_spacing", "leading", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);

    auto alphas = ddim_alphas(c, BetaDefaults{});
    alphas_cumprod_ = alphas.alphas_cumprod;
    final_alpha_cumprod_ = alphas.final_alpha_cumprod;  // the "previous" alpha product of the last step
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1 || n > num_train_timesteps_)
      throw Error("ddim: the number of steps must be between 1 and num_train_timesteps (" +
                  std::to_string(num_train_timesteps_) + "), got " + std::to_string(n));
    num_inference_steps_ = n;
    timesteps_ = discrete_timesteps(spacing_, num_train_timesteps_, n, steps_offset_);
    step_index_ = 0;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator& generator) override {
    require_step_available();
    const int64_t t = std::llround(timestep);
    if (t < 0 || t >= num_train_timesteps_) throw Error("ddim: timestep " + std::to_string(timestep) + " out of range");
    const int64_t prev_t = t - num_train_timesteps_ / num_inference_steps_;

    const at::Tensor alpha_prod_t = alphas_cumprod_[t];
    const at::Tensor alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
    const at::Tensor beta_prod_t = at::rsub(alpha_prod_t, 1);

    at::Tensor pred_original, pred_epsilon;
    if (prediction_type_ == "epsilon") {
      pred_original = (sample - at::pow(beta_prod_t, 0.5) * model_output) / at::pow(alpha_prod_t, 0.5);
      pred_epsilon = model_output;
    } else if (prediction_type_ == "sample") {
      pred_original = model_output;
      pred_epsilon = (sample - at::pow(alpha_prod_t, 0.5) * pred_original) / at::pow(beta_prod_t, 0.5);
    } else {  // v_prediction
      pred_original = at::pow(alpha_prod_t, 0.5) * sample - at::pow(beta_prod_t, 0.5) * model_output;
      pred_epsilon = at::pow(alpha_prod_t, 0.5) * model_output + at::pow(beta_prod_t, 0.5) * sample;
    }
    if (thresholding_) {
      pred_original = threshold_sample(pred_original, dynamic_thresholding_ratio_, sample_max_value_);
    } else if (clip_sample_) {
      pred_original = pred_original.clamp(-clip_sample_range_, clip_sample_range_);
    }

    // sigma_t(eta) of formula (16)
    const at::Tensor beta_prod_t_prev = at::rsub(alpha_prod_t_prev, 1);
    const at::Tensor variance = (beta_prod_t_prev / beta_prod_t) * at::rsub(alpha_prod_t / alpha_prod_t_prev, 1);
    const at::Tensor std_dev_t = eta_ * at::pow(variance, 0.5);

    // "direction pointing to x_t" and x_{t-1} without noise, formula (12)
    const at::Tensor direction = at::pow(at::rsub(alpha_prod_t_prev, 1) - at::pow(std_dev_t, 2), 0.5) * pred_epsilon;
    at::Tensor prev = at::pow(alpha_prod_t_prev, 0.5) * pred_original + direction;
    if (eta_ > 0) {
      const at::Tensor noise = at::randn(model_output.sizes(), generator, model_output.options());
      prev = prev + std_dev_t * noise;
    }
    ++step_index_;
    return prev;
  }

 private:
  double eta_;
  bool clip_sample_ = true, thresholding_ = false;
  double clip_sample_range_ = 1.0, dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0;
  std::string spacing_;
  int steps_offset_ = 0;
  at::Tensor final_alpha_cumprod_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const Config& config, double eta) { return std::make_unique<Ddim>(config, eta); }

}  // namespace tide::schedulers::detail
