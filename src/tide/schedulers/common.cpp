#include "tide/schedulers/common.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tide/runtime/error.h"

namespace tide::schedulers::detail {

namespace {

std::string join(std::initializer_list<const char*> names) {
  std::string s;
  for (const char* n : names) s += std::string(s.empty() ? "" : ", ") + n;
  return s;
}

bool contains(std::initializer_list<const char*> names, const std::string& value) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return value == n; });
}

}  // namespace

// ---------------------------------------------------------------- config

bool Config::has(const std::string& key) const {
  auto it = json_.find(key);
  return it != json_.end() && !it->is_null();
}

void Config::fail(const std::string& key, const std::string& message) const {
  throw Error("scheduler config (" + class_name_ + "): '" + key + "' " + message);
}

double Config::get_double(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {  // Python's json writes -Infinity/Infinity/NaN; configs may carry them as strings
    const std::string s = v.get<std::string>();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
  }
  fail(key, "must be a number, got " + v.dump());
}

int Config::get_int(const std::string& key, int fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (v.is_number_integer()) return v.get<int>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) return static_cast<int>(v.get<double>());
  fail(key, "must be an integer, got " + v.dump());
}

bool Config::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (v.is_boolean()) return v.get<bool>();
  fail(key, "must be true or false, got " + v.dump());
}

std::string Config::get_string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (v.is_string()) return v.get<std::string>();
  fail(key, "must be a string, got " + v.dump());
}

std::optional<double> Config::get_optional_double(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  return get_double(key, 0.0);
}

std::string Config::get_choice(const std::string& key, const std::string& fallback,
                               std::initializer_list<const char*> allowed) const {
  std::string value = get_string(key, fallback);
  if (!contains(allowed, value)) fail(key, "is '" + value + "'; supported: " + join(allowed));
  return value;
}

void Config::require_false(const std::string& key, bool fallback) const {
  if (get_bool(key, fallback)) fail(key, "= true is not supported by tide");
}

std::string read_prediction_type(const Config& config, std::initializer_list<const char*> allowed) {
  return config.get_choice("prediction_type", "epsilon", allowed);
}

// ---------------------------------------------------------------- betas

namespace {

// betas_for_alpha_bar in Python floats, then torch.tensor(float32).
at::Tensor betas_for_alpha_bar(int n, bool cosine) {
  auto alpha_bar = [&](double t) {
    return cosine ? std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2.0) : std::exp(t * -12.0);
  };
  std::vector<double> betas(n);
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
    betas[i] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
  }
  return float32_tensor(betas);
}

}  // namespace

at::Tensor make_betas(const Config& config, const BetaDefaults& defaults,
                      std::initializer_list<const char*> extra_schedules) {
  const int n = config.get_int("num_train_timesteps", 1000);
  // Released models train with 1000; the bound keeps a damaged config from asking for billions of betas.
  if (n < 2 || n > 100000) config.fail("num_train_timesteps", "must be between 2 and 100000");
  if (config.has("trained_betas")) {
    const auto& v = config.json().at("trained_betas");
    if (!v.is_array() || v.size() != static_cast<size_t>(n))
      config.fail("trained_betas", "must be a list of num_train_timesteps (" + std::to_string(n) + ") numbers");
    std::vector<double> betas;
    for (const auto& b : v) {
      if (!b.is_number() || !(b.get<double>() >= 0 && b.get<double>() <= 1))
        config.fail("trained_betas", "must hold numbers between 0 and 1 only");
      betas.push_back(b.get<double>());
    }
    return float32_tensor(betas);
  }
  const double start = config.get_double("beta_start", defaults.beta_start);
  const double end = config.get_double("beta_end", defaults.beta_end);
  // Betas are noise variances per step: a value outside [0, 1] (or NaN) is a damaged config.
  for (const auto& [name, value] : {std::pair<const char*, double>{"beta_start", start}, {"beta_end", end}})
    if (!(value >= 0 && value <= 1)) config.fail(name, "must be a number between 0 and 1");
  const std::string schedule = config.get_string("beta_schedule", defaults.beta_schedule);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  if (schedule == "linear") return at::linspace(start, end, n, f32);
  if (schedule == "scaled_linear") return at::pow(at::linspace(std::pow(start, 0.5), std::pow(end, 0.5), n, f32), 2);
  if (schedule == "squaredcos_cap_v2") return betas_for_alpha_bar(n, true);
  if (contains(extra_schedules, schedule)) {
    if (schedule == "exp") return betas_for_alpha_bar(n, false);
    if (schedule == "sigmoid") return at::sigmoid(at::linspace(-6, 6, n, f32)) * (end - start) + start;
  }
  std::string allowed = "linear, scaled_linear, squaredcos_cap_v2";
  for (const char* e : extra_schedules) allowed += std::string(", ") + e;
  config.fail("beta_schedule", "is '" + schedule + "'; supported: " + allowed);
}

at::Tensor sigma_alphas_cumprod(const Config& c) {
  const bool zero_snr = c.get_bool("rescale_betas_zero_snr", false);
  at::Tensor betas = make_betas(c, BetaDefaults{});
  if (zero_snr) betas = rescale_zero_terminal_snr(betas);
  at::Tensor alphas_cumprod = alphas_cumprod_from_betas(betas);
  if (zero_snr) alphas_cumprod[-1].fill_(std::pow(2.0, -24));
  return alphas_cumprod;
}

bool read_use_karras_sigmas(const Config& c) {
  const bool karras = c.get_bool("use_karras_sigmas", false);
  c.require_false("use_exponential_sigmas");
  c.require_false("use_beta_sigmas");
  return karras;
}

at::Tensor rescale_zero_terminal_snr(const at::Tensor& betas) {
  at::Tensor alphas = at::rsub(betas, 1.0);
  at::Tensor alphas_bar_sqrt = at::cumprod(alphas, 0).sqrt();
  const at::Tensor first = alphas_bar_sqrt[0].clone();
  const at::Tensor last = alphas_bar_sqrt[-1].clone();
  alphas_bar_sqrt.sub_(last);                          // the last timestep becomes zero
  alphas_bar_sqrt.mul_(first / (first - last));        // the first keeps its value
  const at::Tensor alphas_bar = at::pow(alphas_bar_sqrt, 2);
  const int64_t n = alphas_bar.size(0);
  alphas = at::cat({alphas_bar.slice(0, 0, 1), alphas_bar.slice(0, 1, n) / alphas_bar.slice(0, 0, n - 1)});
  return at::rsub(alphas, 1);
}

at::Tensor alphas_cumprod_from_betas(const at::Tensor& betas) { return at::cumprod(at::rsub(betas, 1.0), 0); }

DdimAlphas ddim_alphas(const Config& c, const BetaDefaults& defaults) {
  at::Tensor betas = make_betas(c, defaults);
  if (c.get_bool("rescale_betas_zero_snr", false)) betas = rescale_zero_terminal_snr(betas);
  DdimAlphas a;
  a.alphas_cumprod = alphas_cumprod_from_betas(betas);
  a.final_alpha_cumprod =
      c.get_bool("set_alpha_to_one", true) ? at::scalar_tensor(1.0, at::kFloat) : a.alphas_cumprod[0];
  return a;
}

// ---------------------------------------------------------------- numpy

std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> y(std::max<int64_t>(num, 0));
  const int64_t div = num - 1;
  const double delta = stop - start;
  const double step = div > 0 ? delta / div : std::numeric_limits<double>::quiet_NaN();
  for (int64_t i = 0; i < num; ++i) {
    double v = static_cast<double>(i);
    if (div > 0 && step == 0) v = v / div * delta;  // numpy's denormal-step branch
    else if (div > 0) v = v * step;
    else v = v * delta;
    y[i] = v + start;
  }
  if (num > 1) y[num - 1] = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len = std::ceil((stop - start) / step);
  std::vector<double> out;
  if (!(len > 0)) return out;
  out.resize(static_cast<size_t>(len));
  // numpy fills start + i * (second - first), the step as seen through the second element
  const double delta = (start + step) - start;
  out[0] = start;
  if (out.size() > 1) out[1] = start + step;
  for (size_t i = 2; i < out.size(); ++i) out[i] = start + static_cast<double>(i) * delta;
  return out;
}

double np_round(double x) { return std::nearbyint(x); }

std::vector<double> np_interp_index(const std::vector<double>& x, const std::vector<double>& fp) {
  const int64_t n = static_cast<int64_t>(fp.size());
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (std::isnan(v)) {
      out[i] = v;
    } else if (v < 0) {
      out[i] = fp.front();
    } else if (v >= static_cast<double>(n - 1)) {
      out[i] = fp.back();
    } else {
      const int64_t j = static_cast<int64_t>(std::floor(v));
      if (static_cast<double>(j) == v) {
        out[i] = fp[j];
      } else {
        const double slope = (fp[j + 1] - fp[j]) / (static_cast<double>(j + 1) - static_cast<double>(j));
        double r = slope * (v - static_cast<double>(j)) + fp[j];
        if (std::isnan(r)) {
          r = slope * (v - static_cast<double>(j + 1)) + fp[j + 1];
          if (std::isnan(r) && fp[j] == fp[j + 1]) r = fp[j];
        }
        out[i] = r;
      }
    }
  }
  return out;
}

std::vector<double> reversed(std::vector<double> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

std::vector<double> to_float32_values(std::vector<double> v) {
  for (double& x : v) x = static_cast<double>(static_cast<float>(x));
  return v;
}

std::vector<double> leading_timesteps(int num_train_timesteps, int n, int steps_offset) {
  const int ratio = num_train_timesteps / n;
  std::vector<double> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<double>(static_cast<int64_t>(n - 1 - i) * ratio + steps_offset);
  return t;
}

std::vector<double> trailing_timesteps(double start, int num_train_timesteps, int n) {
  std::vector<double> t = np_arange(start, 0, -static_cast<double>(num_train_timesteps) / n);
  for (double& v : t) v = np_round(v) - 1;
  return t;
}

std::vector<double> discrete_timesteps(const std::string& spacing, int num_train_timesteps, int n, int steps_offset) {
  if (spacing == "leading") return leading_timesteps(num_train_timesteps, n, steps_offset);
  if (spacing == "trailing") return trailing_timesteps(num_train_timesteps, num_train_timesteps, n);
  std::vector<double> t = reversed(np_linspace(0, num_train_timesteps - 1, n));  // linspace
  for (double& v : t) v = np_round(v);
  return t;
}

// ---------------------------------------------------------------- sigmas

std::vector<double> train_sigmas(const at::Tensor& alphas_cumprod) {
  return tensor_values(at::pow(at::rsub(alphas_cumprod, 1) / alphas_cumprod, 0.5));
}

std::vector<double> log_float32(const std::vector<double>& float32_values) {
  std::vector<double> out(float32_values.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(std::log(float32_values[i]));
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  const double rho = 7.0;
  const std::vector<double> ramp = np_linspace(0, 1, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1 / rho);
  std::vector<double> sigmas(n);
  for (int i = 0; i < n; ++i) sigmas[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return sigmas;
}

std::pair<double, double> karras_range(const Config& config, double in_min, double in_max) {
  return {config.get_optional_double("sigma_min").value_or(in_min),
          config.get_optional_double("sigma_max").value_or(in_max)};
}

SigmaSchedule karras_schedule(double sigma_min, double sigma_max, int n, const std::vector<double>& train_sigmas) {
  const std::vector<double> log_sigmas = log_float32(train_sigmas);
  SigmaSchedule schedule;
  schedule.sigmas = karras_sigmas(sigma_min, sigma_max, n);
  for (double s : schedule.sigmas) schedule.timesteps.push_back(sigma_to_t(s, log_sigmas));
  return schedule;
}

double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // low index: argmax of cumsum(dists >= 0), i.e. the last log sigma not above log_sigma
  int64_t count = 0, best = 0, best_count = -1;
  for (size_t i = 0; i < log_sigmas.size(); ++i) {
    count += (log_sigma - log_sigmas[i]) >= 0;
    if (count > best_count) best_count = count, best = static_cast<int64_t>(i);
  }
  const int64_t low_idx = std::min<int64_t>(best, static_cast<int64_t>(log_sigmas.size()) - 2);
  const int64_t high_idx = low_idx + 1;
  const double low = log_sigmas[low_idx], high = log_sigmas[high_idx];
  const float low_minus_high = static_cast<float>(low) - static_cast<float>(high);  // float32 in numpy
  double w = (low - log_sigma) / static_cast<double>(low_minus_high);
  w = std::min(std::max(w, 0.0), 1.0);
  return (1 - w) * static_cast<double>(low_idx) + w * static_cast<double>(high_idx);
}

at::Tensor float32_tensor(const std::vector<double>& values) {
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
}

std::vector<double> tensor_values(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

at::Tensor threshold_sample(const at::Tensor& sample, double ratio, double max_value) {
  const auto dtype = sample.scalar_type();
  at::Tensor x = (dtype == at::kFloat || dtype == at::kDouble) ? sample : sample.to(at::kFloat);
  const int64_t batch = x.size(0);
  x = x.reshape({batch, -1});
  at::Tensor s = at::quantile(x.abs(), ratio, 1);
  s = at::clamp(s, 1, max_value).unsqueeze(1);  // clamped to >= 1: plain clipping to [-1, 1] at least
  x = at::clamp(x, -s, s) / s;
  return x.reshape(sample.sizes()).to(dtype);
}

// ---------------------------------------------------------------- sigma-based schedulers

std::vector<double> k_timesteps(const std::string& spacing, int num_train_timesteps, int n, int steps_offset) {
  std::vector<double> t;
  if (spacing == "linspace") {
    t = reversed(to_float32_values(np_linspace(0, num_train_timesteps - 1, n)));
  } else if (spacing == "leading") {
    t = leading_timesteps(num_train_timesteps, n, 0);
    for (double& v : t) v = static_cast<float>(static_cast<float>(v) + static_cast<float>(steps_offset));
  } else {  // trailing
    t = trailing_timesteps(num_train_timesteps, num_train_timesteps, n);
  }
  return to_float32_values(t);
}

double k_init_noise_sigma(const at::Tensor& sigmas, const std::string& spacing) {
  const at::Tensor max_sigma = sigmas.max();
  if (spacing == "linspace" || spacing == "trailing") return max_sigma.item<double>();
  return at::pow(at::pow(max_sigma, 2) + 1, 0.5).item<double>();
}

at::Tensor k_scale_model_input(const at::Tensor& sample, const at::Tensor& sigma) {
  return sample / at::pow(at::pow(sigma, 2) + 1, 0.5);
}

at::Tensor k_denoised(const std::string& prediction_type, const at::Tensor& model_output, const at::Tensor& sample,
                      const at::Tensor& sigma) {
  if (prediction_type == "epsilon") return sample - sigma * model_output;
  if (prediction_type == "v_prediction")  // denoised = model_output * c_out + input * c_skip
    return model_output * (at::neg(sigma) / at::pow(at::pow(sigma, 2) + 1, 0.5)) + (sample / (at::pow(sigma, 2) + 1));
  return model_output;  // "sample" / "original_sample"
}

}  // namespace tide::schedulers::detail

namespace tide::schedulers::detail {

// ---------------------------------------------------------------- consistency models (LCM, TCD)

std::vector<double> consistency_timesteps(int num_train_timesteps, int original_steps, int n, const std::string& who) {
  if (n < 1) throw Error(who + ": the number of steps must be at least 1, got " + std::to_string(n));
  if (n > num_train_timesteps)
    throw Error(who + ": the number of steps (" + std::to_string(n) + ") cannot exceed num_train_timesteps (" +
                std::to_string(num_train_timesteps) + ")");
  std::vector<double> origin;  // ascending distillation timesteps
  if (original_steps > 0) {
    if (original_steps > num_train_timesteps)
      throw Error(who + ": original_inference_steps (" + std::to_string(original_steps) +
                  ") cannot exceed num_train_timesteps (" + std::to_string(num_train_timesteps) + ")");
    if (n > original_steps)
      throw Error(who + ": the number of steps (" + std::to_string(n) + ") cannot exceed original_inference_steps (" +
                  std::to_string(original_steps) + "): the schedule is a subset of the distillation schedule");
    const int k = num_train_timesteps / original_steps;  // the skipping step of the LCM paper
    for (int i = 1; i <= original_steps; ++i) origin.push_back(static_cast<double>(i * k - 1));
  } else {
    for (int i = 0; i < num_train_timesteps; ++i) origin.push_back(static_cast<double>(i));
  }
  origin = reversed(origin);
  // np.floor(np.linspace(0, len, num=n, endpoint=False)): arange(n) * (len / n), floored.
  const double step = static_cast<double>(origin.size()) / n;
  std::vector<double> t(n);
  for (int i = 0; i < n; ++i) t[i] = origin[static_cast<size_t>(std::floor(static_cast<double>(i) * step))];
  return t;
}

Prediction predict_original_and_epsilon(const std::string& prediction_type, const at::Tensor& model_output,
                                        const at::Tensor& sample, const at::Tensor& alpha_prod_t) {
  const at::Tensor beta_prod_t = at::rsub(alpha_prod_t, 1);
  if (prediction_type == "epsilon")
    return {(sample - beta_prod_t.sqrt() * model_output) / alpha_prod_t.sqrt(), model_output};
  if (prediction_type == "sample")
    return {model_output, (sample - alpha_prod_t.sqrt() * model_output) / beta_prod_t.sqrt()};
  // v_prediction
  return {alpha_prod_t.sqrt() * sample - beta_prod_t.sqrt() * model_output,
          alpha_prod_t.sqrt() * model_output + beta_prod_t.sqrt() * sample};
}

}  // namespace tide::schedulers::detail
