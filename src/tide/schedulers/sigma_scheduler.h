// The k-diffusion style schedulers (Euler, Euler ancestral, LMS, Heun) share how they start: the config keys
// each reads, the training schedule before set_timesteps, the start and end of set_timesteps, and the UNet
// input scaling. Internal to src/tide/schedulers.
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

class SigmaScheduler : public Scheduler {
 public:
  // sample / (sigma^2 + 1)^0.5 at the current step's sigma.
  at::Tensor scale_model_input(const at::Tensor& sample, double timestep) override;

 protected:
  // Sets the name and reads num_train_timesteps and prediction_type (one of `predictions`).
  SigmaScheduler(const Config& config, std::string name, std::initializer_list<const char*> predictions);

  // timestep_spacing (linspace, leading or trailing) and steps_offset.
  void read_timestep_spacing(const Config& config);

  // diffusers' __init__ schedule: all training sigmas, descending, then 0; the training timesteps
  // num_train_timesteps - 1 .. 0 (float32 values); init_noise_sigma of those sigmas.
  void use_training_schedule();

  // The start of set_timesteps: checks n, and gives the spacing's timesteps (float32 values, descending) and
  // the training sigmas (float32 values, ascending in t) to interpolate at them.
  struct Start {
    std::vector<double> timesteps;
    std::vector<double> train_sigmas;
  };
  Start start_set_timesteps(int n);
  // The end of set_timesteps, once sigmas_ holds the schedule: init_noise_sigma, stepping from the start.
  void finish_set_timesteps();

  std::string spacing_;
  int steps_offset_ = 0;
};

}  // namespace tide::schedulers::detail
