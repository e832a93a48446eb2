// DPMSolverMultistepScheduler (diffusers 0.35): multistep DPM-Solver++ (data prediction) and
// DPM-Solver (noise prediction) of order 1-3, "midpoint" or "heun" second-order updates. The CLI
// names dpm++2m / dpm++3m are algorithm_type "dpmsolver++" with solver_order 2 / 3.
#include <cmath>
#include <limits>

#include "tide/runtime/error.h"
#include "tide/schedulers/common.h"

namespace tide::schedulers::detail {

namespace {

class DpmSolver final : public Scheduler {
 public:
  DpmSolver(const Config& c, const std::string& name) : config_(c) {
    name_ = name;
    noise_form_ = NoiseForm::kAlphaSigma;
    num_train_timesteps_ = c.get_int("num_train_timesteps", 1000);
    solver_order_ = c.get_int("solver_order", 2);
    if (solver_order_ < 1 || solver_order_ > 3) c.fail("solver_order", "must be 1, 2 or 3");
    prediction_type_ = read_prediction_type(c, {"epsilon", "sample", "v_prediction"});
    thresholding_ = c.get_bool("thresholding", false);
    dynamic_thresholding_ratio_ = c.get_double("dynamic_thresholding_ratio", 0.995);
    sample_max_value_ = c.get_double("sample_max_value", 1.0);
    algorithm_type_ = c.get_string("algorithm_type", "dpmsolver++");
    if (algorithm_type_ == "deis") algorithm_type_ = "dpmsolver++";  // diffusers' fallback
    if (algorithm_type_ != "dpmsolver++" && algorithm_type_ != "dpmsolver")
      c.fail("algorithm_type", "is '" + algorithm_type_ + "'; supported: dpmsolver++, dpmsolver");
    solver_type_ = c.get_string("solver_type", "midpoint");
    if (solver_type_ == "logrho" || solver_type_ == "bh1" || solver_type_ == "bh2") solver_type_ = "midpoint";
    if (solver_type_ != "midpoint" && solver_type_ != "heun")
      c.fail("solver_type", "is '" + solver_type_ + "'; supported: midpoint, heun");
    lower_order_final_ = c.get_bool("lower_order_final", true);
    euler_at_final_ = c.get_bool("euler_at_final", false);
    karras_ = c.get_bool("use_karras_sigmas", false);
    for (const char* key : {"use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
                            "use_dynamic_shifting"})
      c.require_false(key);
    final_sigmas_type_ = c.get_choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
    if (algorithm_type_ == "dpmsolver" && final_sigmas_type_ == "zero")
      c.fail("final_sigmas_type", "'zero' is not supported with algorithm_type dpmsolver (use sigma_min)");
    lambda_min_clipped_ = c.get_double("lambda_min_clipped", -std::numeric_limits<double>::infinity());
    const std::string variance_type = c.get_string("variance_type", "");
    if (!variance_type.empty()) c.fail("variance_type", "'" + variance_type + "' is not supported (learned variances)");
    spacing_ = c.get_choice("timestep_spacing", "linspace", {"linspace", "leading", "trailing"});
    steps_offset_ = c.get_int("steps_offset", 0);
    const bool zero_snr = c.get_bool("rescale_betas_zero_snr", false);

    at::Tensor betas = make_betas(c, BetaDefaults{});
    if (zero_snr) betas = rescale_zero_terminal_snr(betas);
    alphas_cumprod_ = alphas_cumprod_from_betas(betas);
    if (zero_snr) alphas_cumprod_[-1].fill_(std::pow(2.0, -24));  // keeps the first sigma finite
    const at::Tensor alpha_t = at::sqrt(alphas_cumprod_);
    const at::Tensor sigma_t = at::sqrt(at::rsub(alphas_cumprod_, 1));
    lambda_t_ = at::log(alpha_t) - at::log(sigma_t);
    init_noise_sigma_ = 1.0;
  }

  void set_timesteps(int n) override {
    if (n < 1) throw Error(name_ + ": the number of steps must be at least 1");
    const int T = num_train_timesteps_;
    // clipping the smallest lambda(t) for numerical stability (matters for the cosine schedule)
    const int64_t clipped_idx = at::searchsorted(at::flip(lambda_t_, {0}), lambda_min_clipped_).item<int64_t>();
    const int64_t last_timestep = T - clipped_idx;
    std::vector<double> t;
    if (spacing_ == "linspace") {
      t = reversed(np_linspace(0, static_cast<double>(last_timestep - 1), n + 1));
      t.pop_back();
      for (double& v : t) v = np_round(v);
    } else if (spacing_ == "leading") {
      const int64_t ratio = last_timestep / (n + 1);
      for (int i = n; i >= 1; --i) t.push_back(static_cast<double>(i * ratio + steps_offset_));
    } else {
      t = trailing_timesteps(static_cast<double>(last_timestep), T, n);
    }

    const std::vector<double> train = train_sigmas(alphas_cumprod_);
    std::vector<double> sigmas;
    if (karras_) {
      const std::vector<double> log_sigmas = log_float32(train);
      const auto [lo, hi] = karras_range(config_, train.front(), train.back());
      sigmas = karras_sigmas(lo, hi, n);
      t.clear();
      const bool cosine = config_.get_string("beta_schedule", "linear") == "squaredcos_cap_v2";
      for (double s : sigmas) t.push_back(cosine ? sigma_to_t(s, log_sigmas) : np_round(sigma_to_t(s, log_sigmas)));
    } else {
      sigmas = np_interp_index(t, train);
    }
    sigmas.push_back(final_sigmas_type_ == "zero" ? 0.0 : train.front());
    sigmas_ = float32_tensor(sigmas);
    for (double& v : t) v = static_cast<double>(static_cast<int64_t>(v));  // .to(torch.int64)
    timesteps_ = t;
    num_inference_steps_ = static_cast<int>(t.size());
    model_outputs_.assign(solver_order_, at::Tensor());
    lower_order_nums_ = 0;
    step_index_ = -1;
    begin_index_ = -1;
  }

  at::Tensor step(const at::Tensor& model_output, double timestep, const at::Tensor& sample_in,
                  at::Generator&) override {
    if (step_index_ < 0) init_step_index(timestep, true);
    require_step_available();
    const int n = static_cast<int>(timesteps_.size());
    // lower orders at the end improve stability for few steps
    const bool lower_order_final = step_index_ == n - 1 &&
                                   (euler_at_final_ || (lower_order_final_ && n < 15) || final_sigmas_type_ == "zero");
    const bool lower_order_second = step_index_ == n - 2 && lower_order_final_ && n < 15;

    const at::Tensor converted = convert_model_output(model_output, sample_in);
    for (int i = 0; i + 1 < solver_order_; ++i) model_outputs_[i] = model_outputs_[i + 1];
    model_outputs_.back() = converted;

    const at::Tensor sample = sample_in.to(at::kFloat);
    at::Tensor prev;
    if (solver_order_ == 1 || lower_order_nums_ < 1 || lower_order_final)
      prev = first_order_update(converted, sample);
    else if (solver_order_ == 2 || lower_order_nums_ < 2 || lower_order_second)
      prev = second_order_update(sample);
    else
      prev = third_order_update(sample);
    if (lower_order_nums_ < solver_order_) ++lower_order_nums_;
    ++step_index_;
    return prev.to(converted.scalar_type());
  }

 private:
  // alpha_t = 1 / (sigma^2 + 1)^0.5, sigma_t = sigma * alpha_t (0-dim float32).
  static std::pair<at::Tensor, at::Tensor> alpha_sigma(const at::Tensor& sigma) {
    const at::Tensor alpha = at::reciprocal(at::pow(at::pow(sigma, 2) + 1, 0.5)) * 1;
    return {alpha, sigma * alpha};
  }
  static at::Tensor lambda(const std::pair<at::Tensor, at::Tensor>& as) {
    return at::log(as.first) - at::log(as.second);
  }

  at::Tensor convert_model_output(const at::Tensor& model_output, const at::Tensor& sample) const {
    const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_[step_index_]);
    if (algorithm_type_ == "dpmsolver++") {  // data prediction x0
      at::Tensor x0;
      if (prediction_type_ == "epsilon") x0 = (sample - sigma_t * model_output) / alpha_t;
      else if (prediction_type_ == "sample") x0 = model_output;
      else x0 = alpha_t * sample - sigma_t * model_output;
      if (thresholding_) x0 = threshold_sample(x0, dynamic_thresholding_ratio_, sample_max_value_);
      return x0;
    }
    at::Tensor epsilon;  // noise prediction
    if (prediction_type_ == "epsilon") epsilon = model_output;
    else if (prediction_type_ == "sample") epsilon = (sample - alpha_t * model_output) / sigma_t;
    else epsilon = alpha_t * model_output + sigma_t * sample;
    if (thresholding_) {
      at::Tensor x0 = (sample - sigma_t * epsilon) / alpha_t;
      x0 = threshold_sample(x0, dynamic_thresholding_ratio_, sample_max_value_);
      epsilon = (sample - alpha_t * x0) / sigma_t;
    }
    return epsilon;
  }

  at::Tensor first_order_update(const at::Tensor& m, const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s = alpha_sigma(sigmas_[step_index_]);
    const at::Tensor h = lambda(t) - lambda(s);
    if (algorithm_type_ == "dpmsolver++")
      return (t.second / s.second) * sample - (t.first * (at::exp(-h) - 1.0)) * m;
    return (t.first / s.first) * sample - (t.second * (at::exp(h) - 1.0)) * m;
  }

  at::Tensor second_order_update(const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s0 = alpha_sigma(sigmas_[step_index_]);
    const auto s1 = alpha_sigma(sigmas_[step_index_ - 1]);
    const at::Tensor& m0 = model_outputs_[solver_order_ - 1];
    const at::Tensor& m1 = model_outputs_[solver_order_ - 2];
    const at::Tensor lambda_s0 = lambda(s0);
    const at::Tensor h = lambda(t) - lambda_s0, h_0 = lambda_s0 - lambda(s1);
    const at::Tensor r0 = h_0 / h;
    const at::Tensor& D0 = m0;
    const at::Tensor D1 = (at::reciprocal(r0) * 1.0) * (m0 - m1);
    const auto& [alpha_t, sigma_t] = t;
    if (algorithm_type_ == "dpmsolver++") {
      if (solver_type_ == "midpoint")
        return (sigma_t / s0.second) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 -
               0.5 * (alpha_t * (at::exp(-h) - 1.0)) * D1;
      return (sigma_t / s0.second) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 +
             (alpha_t * ((at::exp(-h) - 1.0) / h + 1.0)) * D1;
    }
    if (solver_type_ == "midpoint")
      return (alpha_t / s0.first) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
             0.5 * (sigma_t * (at::exp(h) - 1.0)) * D1;
    return (alpha_t / s0.first) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
           (sigma_t * ((at::exp(h) - 1.0) / h - 1.0)) * D1;
  }

  at::Tensor third_order_update(const at::Tensor& sample) const {
    const auto t = alpha_sigma(sigmas_[step_index_ + 1]);
    const auto s0 = alpha_sigma(sigmas_[step_index_]);
    const auto s1 = alpha_sigma(sigmas_[step_index_ - 1]);
    const auto s2 = alpha_sigma(sigmas_[step_index_ - 2]);
    const at::Tensor& m0 = model_outputs_[solver_order_ - 1];
    const at::Tensor& m1 = model_outputs_[solver_order_ - 2];
    const at::Tensor& m2 = model_outputs_[solver_order_ - 3];
    const at::Tensor lambda_s0 = lambda(s0), lambda_s1 = lambda(s1);
    const at::Tensor h = lambda(t) - lambda_s0, h_0 = lambda_s0 - lambda_s1, h_1 = lambda_s1 - lambda(s2);
    const at::Tensor r0 = h_0 / h, r1 = h_1 / h;
    const at::Tensor& D0 = m0;
    const at::Tensor D1_0 = (at::reciprocal(r0) * 1.0) * (m0 - m1);
    const at::Tensor D1_1 = (at::reciprocal(r1) * 1.0) * (m1 - m2);
    const at::Tensor D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
    const at::Tensor D2 = (at::reciprocal(r0 + r1) * 1.0) * (D1_0 - D1_1);
    const auto& [alpha_t, sigma_t] = t;
    if (algorithm_type_ == "dpmsolver++")
      return (sigma_t / s0.second) * sample - (alpha_t * (at::exp(-h) - 1.0)) * D0 +
             (alpha_t * ((at::exp(-h) - 1.0) / h + 1.0)) * D1 -
             (alpha_t * ((at::exp(-h) - 1.0 + h) / at::pow(h, 2) - 0.5)) * D2;
    return (alpha_t / s0.first) * sample - (sigma_t * (at::exp(h) - 1.0)) * D0 -
           (sigma_t * ((at::exp(h) - 1.0) / h - 1.0)) * D1 -
           (sigma_t * ((at::exp(h) - 1.0 - h) / at::pow(h, 2) - 0.5)) * D2;
  }

  Config config_;
  int solver_order_ = 2;
  std::string algorithm_type_, solver_type_, final_sigmas_type_, spacing_;
  bool thresholding_ = false, lower_order_final_ = true, euler_at_final_ = false, karras_ = false;
  double dynamic_thresholding_ratio_ = 0.995, sample_max_value_ = 1.0, lambda_min_clipped_ = 0;
  int steps_offset_ = 0;
  at::Tensor lambda_t_;
  std::vector<at::Tensor> model_outputs_;  // converted outputs, newest last
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const Config& config, const std::string& name) {
  return std::make_unique<DpmSolver>(config, name);
}

}  // namespace tide::schedulers::detail
