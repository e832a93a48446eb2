#include "tide/schedulers/multistep.h"

namespace tide::schedulers::detail {

AlphaSigma alpha_sigma(const at::Tensor& sigma) {
  const at::Tensor alpha = at::reciprocal(at::pow(at::pow(sigma, 2) + 1, 0.5)) * 1;  // Python's 1 / x
  return {alpha, sigma * alpha};
}

at::Tensor lambda(const AlphaSigma& as) { return at::log(as.alpha) - at::log(as.sigma); }

std::vector<double> multistep_timesteps(const std::string& spacing, int64_t last_timestep, int num_train_timesteps,
                                        int n, int steps_offset) {
  std::vector<double> t;
  if (spacing == "linspace") {
    t = reversed(np_linspace(0, static_cast<double>(last_timestep - 1), n + 1));
    t.pop_back();
    for (double& v : t) v = np_round(v);
  } else if (spacing == "leading") {
    const int64_t ratio = last_timestep / (n + 1);
    for (int i = n; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + steps_offset));
  } else {
    t = trailing_timesteps(static_cast<double>(last_timestep), num_train_timesteps, n);
  }
  return t;
}

at::Tensor data_prediction(const std::string& prediction_type, const at::Tensor& model_output,
                           const at::Tensor& sample, const AlphaSigma& as) {
  if (prediction_type == "epsilon") return (sample - as.sigma * model_output) / as.alpha;
  if (prediction_type == "sample") return model_output;
  return as.alpha * sample - as.sigma * model_output;  // v_prediction
}

at::Tensor noise_prediction(const std::string& prediction_type, const at::Tensor& model_output,
                            const at::Tensor& sample, const AlphaSigma& as) {
  if (prediction_type == "epsilon") return model_output;
  if (prediction_type == "sample") return (sample - as.alpha * model_output) / as.sigma;
  return as.alpha * model_output + as.sigma * sample;  // v_prediction
}

at::Tensor Thresholding::apply(const at::Tensor& x0) const {
  return enabled ? threshold_sample(x0, ratio, max_value) : x0;
}

Thresholding read_thresholding(const Config& c) {
  Thresholding t;
  t.enabled = c.get_bool("thresholding", false);
  t.ratio = c.get_double("dynamic_thresholding_ratio", 0.995);
  t.max_value = c.get_double("sample_max_value", 1.0);
  return t;
}

}  // namespace tide::schedulers::detail
