// LCMScheduler (diffusers 0.35): multistep consistency sampling. Each step maps the sample to the
// consistency function's estimate `denoised = c_out·x0 + c_skip·x` and, except at the last step,
// re-noises it to the next timestep with a fresh draw from the generator.
#include <cmath>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class Lcm final : public Scheduler {
 public:
  explicit Lcm(const Config& c) {
    name_ = "lcm";
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    original_steps_ = c.get_int("original_inference_steps", 50);
    if (original_steps_ < 1) c.fail("original_inference_steps", "must be at least 1");
    timestep_scaling_ = c.get_double("timestep_scaling", 10.0);
    clip_sample_ = c.get_bool("clip_sample", false);
    clip_sample_range_ = c.get_double("clip_sample_range", 1.0);
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);

    auto alphas = ddim_alphas(c, BetaDefaults{0.00085, 0.012, "scaled_linear"});
    alphas_cumprod_ = alphas.alphas_cumprod;
    final_alpha_cumprod_ = alphas.final_alpha_cumprod;  // the "previous" alpha product of the last step
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    timesteps_ = consistency_timesteps(num_train_timesteps_, original_steps_, n, "lcm");
    num_inference_steps_ = n;
    step_index_ = -1;
    last_denoised_ = at::Tensor();
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample,
                  at::Generator& generator) override {
    if (step_index_ < 0) init_step_index(timestep, false);
    require_step_available();
    const int64_t t = std::llround(timestep);
    const bool last = step_index_ == num_inference_steps_ - 1;
    const int64_t prev_t = step_index_ + 1 < static_cast<int>(timesteps_.size())
                               ? std::llround(timesteps_[step_index_ + 1])
                               : t;
    const at::Tensor alpha_prod_t = alphas_cumprod_[t];
    const at::Tensor alpha_prod_t_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;

    // Boundary conditions of the consistency function, in float32 like diffusers' tensor arithmetic
    // (timestep * timestep_scaling is a float32 tensor there).
    const at::Tensor scaled = at::scalar_tensor(static_cast<float>(t) * static_cast<float>(timestep_scaling_), at::kFloat);
    const double sigma_data_sq = 0.25;  // sigma_data = 0.5
    // Python's `float / tensor` is reciprocal(tensor) * float.
    const at::Tensor c_skip = (at::pow(scaled, 2) + sigma_data_sq).reciprocal() * sigma_data_sq;
    const at::Tensor c_out = scaled / at::pow(at::pow(scaled, 2) + sigma_data_sq, 0.5);

    at::Tensor original = predict_original_and_epsilon(prediction_type_, model_output, sample, alpha_prod_t).original;
    if (thresholding_) {
      original = threshold_sample(original, dynamic_thresholding_ratio_, sample_max_value_);
    } else if (clip_sample_) {
      original = original.clamp(-clip_sample_range_, clip_sample_range_);
    }
    const at::Tensor denoised = c_out * original + c_skip * sample;

    at::Tensor prev = denoised;  // no noise at the last step (nor in one-step sampling)
    if (!last) {
      const at::Tensor noise = at::randn(model_output.sizes(), generator, denoised.options());
      prev = alpha_prod_t_prev.sqrt() * denoised + at::rsub(alpha_prod_t_prev, 1).sqrt() * noise;
    }
    last_denoised_ = denoised;
    ++step_index_;
    return prev;
  }

 private:
  int original_steps_ = 50;
  double timestep_scaling_ = 10.0;
  bool clip_sample_ = false, thresholding_ = false;
  double clip_sample_range_ = 1.0, dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0;
  at::Tensor final_alpha_cumprod_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lcm(const Config& config) { return std::make_unique<Lcm>(config); }

}  // namespace tide::schedulers::detail
