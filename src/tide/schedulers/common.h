// Helpers shared by the schedulers: the config with each diffusers class's defaults, beta schedules,
// numpy-exact timestep spacing and interpolation, Karras sigmas and sigma -> timestep interpolation.
// Internal to src/tide/schedulers.
#pragma once
#include <ATen/ATen.h>

#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tide/schedulers/scheduler.h"

namespace tide::schedulers::detail {

// A scheduler config as one diffusers class sees it: keys present (and not null) give their value,
// missing keys the class's default. Errors name the class and the key.
class Config {
 public:
  Config(nlohmann::json json, std::string class_name) : json_(std::move(json)), class_name_(std::move(class_name)) {}

  const std::string& class_name() const { return class_name_; }
  const nlohmann::json& json() const { return json_; }
  bool has(const std::string& key) const;  // present and not null

  double get_double(const std::string& key, double fallback) const;
  int get_int(const std::string& key, int fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::optional<double> get_optional_double(const std::string& key) const;
  // A string value that must be one of `allowed`.
  std::string get_choice(const std::string& key, const std::string& fallback,
                         std::initializer_list<const char*> allowed) const;
  // Throws unless the boolean key is false: a diffusers feature tide does not implement.
  void require_false(const std::string& key, bool fallback = false) const;

  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  nlohmann::json json_;
  std::string class_name_;
};

// The common beta-schedule keys, with the class's defaults for beta_start/beta_end/beta_schedule.
struct BetaDefaults {
  double beta_start = 0.0001;
  double beta_end = 0.02;
  const char* beta_schedule = "linear";
};
// betas (float32 [num_train_timesteps]) like the class's __init__: linear, scaled_linear,
// squaredcos_cap_v2, trained_betas, plus the extra schedules the class accepts (DDPM "sigmoid", Heun "exp").
at::Tensor make_betas(const Config& config, const BetaDefaults& defaults,
                      std::initializer_list<const char*> extra_schedules = {});
// diffusers' rescale_zero_terminal_snr (float32 torch arithmetic).
at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas);
// alphas_cumprod = cumprod(1 - betas), optionally after rescale_betas_zero_snr.
at::Tensor alphas_cumprod_from_betas(const at::Tensor& betas);
// The DDIM family's (DDIM, LCM, TCD) alphas: alphas_cumprod of the config's betas, rescaled to zero terminal SNR
// when rescale_betas_zero_snr is set, and the "previous" alpha product of the last step (1 with set_alpha_to_one,
// default true, else alphas_cumprod[0]).
struct DdimAlphas {
  at::Tensor alphas_cumprod;
  at::Tensor final_alpha_cumprod;
};
DdimAlphas ddim_alphas(const Config& config, const BetaDefaults& defaults);

// numpy-exact helpers (float64).
std::vector<double> np_linspace(double start, double stop, int64_t num);
std::vector<double> np_arange(double start, double stop, double step);
double np_round(double x);  // half to even, like np.round
// np.interp(x, arange(len(fp)), fp).
std::vector<double> np_interp_index(const std::vector<double>& x, const std::vector<double>& fp);
std::vector<double> reversed(std::vector<double> v);
std::vector<double> to_float32_values(std::vector<double> v);  // .astype(np.float32) kept as doubles

// Timestep spacings as most schedulers write them (descending, before any dtype cast):
// "leading": round(arange(n) * (train // n))[::-1] + offset; "trailing": round(arange(start, 0, -train/n)) - 1.
std::vector<double> leading_timesteps(int num_train_timesteps, int n, int steps_offset);
std::vector<double> trailing_timesteps(double start, int num_train_timesteps, int n);
// DDIM's and DDPM's integer timesteps for a `timestep_spacing` of linspace (rounded), leading or trailing.
std::vector<double> discrete_timesteps(const std::string& spacing, int num_train_timesteps, int n, int steps_offset);

// The sigma schedulers' (Euler, Euler ancestral, DPM-Solver, UniPC) alphas_cumprod: of the config's betas with the
// class's default betas, rescaled to zero terminal SNR when rescale_betas_zero_snr is set, and then with its last
// value 2^-24 (fp16's smallest subnormal: close to 0 without being 0, so that the first sigma is finite).
at::Tensor sigma_alphas_cumprod(const Config& config);
// use_karras_sigmas, after refusing use_exponential_sigmas and use_beta_sigmas (not implemented).
bool read_use_karras_sigmas(const Config& config);

// np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5): float32 training sigmas, ascending in t.
std::vector<double> train_sigmas(const at::Tensor& alphas_cumprod);
// np.log of a float32 array (float32 results, kept as doubles).
std::vector<double> log_float32(const std::vector<double>& float32_values);
// _convert_to_karras: (max^(1/7) + ramp * (min^(1/7) - max^(1/7)))^7, ramp = linspace(0, 1, n).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// _sigma_to_t against float32 log sigmas (float64 result).
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas);
// Config sigma_min / sigma_max when present (the diffusers "hack" in _convert_to_karras).
std::pair<double, double> karras_range(const Config& config, double in_min, double in_max);
// Karras sigmas (descending, n values) and their timesteps: sigma_to_t against the float32 logs of the training
// sigmas `train_sigmas` (float64, unrounded), as the schedulers' use_karras_sigmas branches compute them.
struct SigmaSchedule {
  std::vector<double> sigmas;
  std::vector<double> timesteps;
};
SigmaSchedule karras_schedule(double sigma_min, double sigma_max, int n, const std::vector<double>& train_sigmas);

// float32 tensor from float64 values, like torch.from_numpy(values.astype(np.float32)).
at::Tensor float32_tensor(const std::vector<double>& values);
std::vector<double> tensor_values(const at::Tensor& t);

// _threshold_sample (dynamic thresholding of x0 predictions).
at::Tensor threshold_sample(const at::Tensor& sample, double ratio, double max_value);

// Sigma-based (k-diffusion style) schedulers: Euler, Euler ancestral, LMS, Heun.
// Timesteps as float32 values, descending, for "linspace", "leading", "trailing".
std::vector<double> k_timesteps(const std::string& spacing, int num_train_timesteps, int n, int steps_offset);
// init_noise_sigma: max sigma for "linspace"/"trailing", else (max^2 + 1)^0.5 (float32).
double k_init_noise_sigma(const at::Tensor& sigmas, const std::string& spacing);
// sample / (sigma^2 + 1)^0.5, the UNet input.
at::Tensor k_scale_model_input(const at::Tensor& sample, const at::Tensor& sigma);
// x0 predicted at `sigma` for epsilon, v_prediction and sample (original_sample) predictions.
at::Tensor k_denoised(const std::string& prediction_type, const at::Tensor& model_output, const at::Tensor& sample,
                      const at::Tensor& sigma);

// Consistency-model schedules (LCM, TCD): the distillation timesteps k·i - 1 for i = 1..original_steps
// (k = num_train_timesteps // original_steps), reversed, of which the n at floor(linspace(0, len, n,
// endpoint=False)) are taken. original_steps 0: TCD without original_inference_steps (all of 0..train-1).
// Throws like diffusers for an n the schedule cannot give; `who` names the scheduler in messages.
std::vector<double> consistency_timesteps(int num_train_timesteps, int original_steps, int n, const std::string& who);

// x0 and epsilon predicted from a model output at alpha_prod_t (float32 0-dim) for epsilon, sample and
// v_prediction models, with DDIM's formulas.
struct Prediction {
  at::Tensor original;  // x0
  at::Tensor epsilon;
};
Prediction predict_original_and_epsilon(const std::string& prediction_type, const at::Tensor& model_output,
                                        const at::Tensor& sample, const at::Tensor& alpha_prod_t);

// The config's prediction_type (default "epsilon"); throws unless it is one of `allowed`.
std::string read_prediction_type(const Config& config, std::initializer_list<const char*> allowed);

// Factories of the families (one file each).
std::unique_ptr<Scheduler> make_pndm(const Config& config);
std::unique_ptr<Scheduler> make_ddim(const Config& config, double eta);
std::unique_ptr<Scheduler> make_ddpm(const Config& config);
std::unique_ptr<Scheduler> make_euler(const Config& config);
std::unique_ptr<Scheduler> make_euler_ancestral(const Config& config);
std::unique_ptr<Scheduler> make_lms(const Config& config);
std::unique_ptr<Scheduler> make_heun(const Config& config);
std::unique_ptr<Scheduler> make_dpm_solver(const Config& config, const std::string& name);
std::unique_ptr<Scheduler> make_unipc(const Config& config);
std::unique_ptr<Scheduler> make_lcm(const Config& config);
std::unique_ptr<Scheduler> make_tcd(const Config& config, double eta);

}  // namespace tide::schedulers::detail
