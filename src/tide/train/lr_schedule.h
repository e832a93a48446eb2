// diffusers' learning-rate schedules (optimization.py, get_scheduler) as the factor LambdaLR multiplies
// the base learning rate by. Under accelerate with N processes the schedule is built with N× the warmup
// and training steps and stepped N times per optimizer step; `world_size` reproduces that.
#pragma once
#include <string>
#include <vector>

namespace tide::train {

struct LrScheduleConfig {
  std::string name = "constant";  // constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial
  double base_lr = 1e-4;
  int warmup_steps = 500;
  int training_steps = 5000;
  int num_cycles = 1;  // cosine_with_restarts only (cosine uses diffusers' default 0.5 periods)
  int world_size = 1;
};

std::vector<std::string> lr_schedule_names();

class LrSchedule {
 public:
  // Unknown names or a polynomial schedule with base_lr <= 1e-7 give a tide::Error.
  explicit LrSchedule(LrScheduleConfig config);
  // The LambdaLR factor at scheduler step `step` (diffusers' current_step).
  double factor(long step) const;
  // The learning rate of optimizer update `update` (0-based).
  double lr(long update) const;
  const LrScheduleConfig& config() const { return config_; }

 private:
  LrScheduleConfig config_;
};

}  // namespace tide::train
