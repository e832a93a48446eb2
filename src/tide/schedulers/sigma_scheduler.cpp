#include "tide/schedulers/sigma_scheduler.h"

#include "tide/runtime/error.h"

namespace tide::schedulers::detail {

SigmaScheduler::SigmaScheduler(const Config& c, std::string name, std::initializer_list<const char*> predictions) {
  name_ = std::move(name);
  noise_form_ = NoiseForm::kSigma;
  num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
  prediction_type_ = read_prediction_type(c, predictions);
}

void SigmaScheduler::read_timestep_spacing(const Config& c) {
  spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
  steps_offset_ = c.get_int("steps_offset", 0);
}

void SigmaScheduler::use_training_schedule() {
  const at::Tensor train = at::pow(at::rsub(alphas_cumprod_, 1) / alphas_cumprod_, 0.5).flip(0);
  sigmas_ = at::cat({train, at::zeros({1}, train.options())});
  timesteps_ = reversed(to_float32_values(np_linspace(0, num_train_timesteps_ - 1, num_train_timesteps_)));
  init_noise_sigma_ = k_init_noise_sigma(sigmas_, spacing_);
}

SigmaScheduler::Start SigmaScheduler::start_set_timesteps(int n) {
  if (n < 1) throw Error(name_ + ": the number of steps must be at least 1");
  num_inference_steps_ = n;
  return {k_timesteps(spacing_, num_train_timesteps_, n, steps_offset_), train_sigmas(alphas_cumprod_)};
}

void SigmaScheduler::finish_set_timesteps() {
  init_noise_sigma_ = k_init_noise_sigma(sigmas_, spacing_);
  step_index_ = -1;
  begin_index_ = -1;
}

at::Tensor SigmaScheduler::scale_model_input(const at::Tensor& sample, double timestep) {
  if (step_index_ < 0) init_step_index(timestep, false);
  require_step_available();
  return k_scale_model_input(sample, sigmas_[step_index_]);
}

}  // namespace tide::schedulers::detail
