// The arithmetic DPM-Solver(++) and UniPC share, in diffusers' float32 order of operations: alpha_t, sigma_t
// and lambda_t of a sigma, the timestep schedule of their set_timesteps, the model output converted to data
// (x0) or noise predictions, and dynamic thresholding. Internal to src/tide/schedulers.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

// alpha_t = 1 / (sigma^2 + 1)^0.5, sigma_t = sigma * alpha_t (0-dim float32), diffusers' _sigma_to_alpha_sigma_t.
struct AlphaSigma {
  at::Tensor alpha;
  at::Tensor sigma;
};
AlphaSigma alpha_sigma(const at::Tensor& sigma);
// lambda_t = log(alpha_t) - log(sigma_t), the half log-SNR.
at::Tensor lambda(const AlphaSigma& as);

// Timesteps for "linspace" (round(linspace(0, last_timestep - 1, n + 1))[::-1][:-1]), "leading" and "trailing",
// descending, before the int64 cast. last_timestep: num_train_timesteps, or fewer where lambda_min_clipped cuts.
std::vector<double> multistep_timesteps(const std::string& spacing, int64_t last_timestep, int num_train_timesteps,
                                        int n, int steps_offset);

// The model output as a data prediction x0 (epsilon, sample or v_prediction models), without thresholding.
at::Tensor data_prediction(const std::string& prediction_type, const at::Tensor& model_output,
                           const at::Tensor& sample, const AlphaSigma& as);
// The model output as a noise prediction epsilon.
at::Tensor noise_prediction(const std::string& prediction_type, const at::Tensor& model_output,
                            const at::Tensor& sample, const AlphaSigma& as);

// thresholding, dynamic_thresholding_ratio and sample_max_value of the config.
struct Thresholding {
  bool enabled = false;
  double ratio = 0.995;
  double max_value = 1.0;
  // x0 itself without thresholding, else _threshold_sample(x0).
  at::Tensor apply(const at::Tensor& x0) const;
};
Thresholding read_thresholding(const Config& config);

}  // namespace tide::schedulers::detail
